"""Interactions: Moebius and OR transforms on planted terms, the AND-OR split, consistency measures and
prompt selection (including the no-agreement error), without any model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from saematch.errors import ConfigError, SaematchError
from saematch.interactions.config import InteractionsConfig
from saematch.interactions.consistency import cluster_ci, compare
from saematch.interactions.mobius import fit_and_or, mobius, or_interactions, or_values, orders, salient, zeta
from saematch.interactions.prompts import DocTokens, select_prompts


def bits(*idx: int) -> int:
    return sum(1 << i for i in idx)


def planted(n: int, ands: dict[int, float], ors: dict[int, float]) -> np.ndarray:
    return np.array([sum(a for t, a in ands.items() if t & s == t) + sum(o for t, o in ors.items() if t & s)
                     for s in range(1 << n)], dtype=np.float64)


def test_mobius_recovers_planted_and_terms_exactly_and_is_efficient():
    rng = np.random.default_rng(0)
    n = 7
    ands = {int(t): float(rng.normal()) for t in rng.choice(1 << n, size=12, replace=False)}
    got = mobius(torch.as_tensor(planted(n, ands, {}))).numpy()
    want = np.zeros(1 << n)
    for t, a in ands.items():
        want[t] = a
    np.testing.assert_allclose(got, want, atol=1e-12)
    v = rng.normal(size=(5, 1 << n))
    i_and = mobius(torch.as_tensor(v))
    np.testing.assert_allclose(i_and.sum(-1).numpy(), v[:, -1], atol=1e-12)  # efficiency: sum_S I(S) = v(N)
    np.testing.assert_allclose(zeta(i_and).numpy(), v, atol=1e-12)


def test_or_interactions_match_their_definition():
    rng = np.random.default_rng(1)
    n = 4
    v = rng.normal(size=1 << n)
    i_or = or_interactions(torch.as_tensor(v)).numpy()
    full = (1 << n) - 1
    for s in range(1, 1 << n):  # -sum_{T in S} (-1)^{|S|-|T|} v(N \ T), by enumeration
        want = -sum((-1) ** (bin(s).count("1") - bin(t).count("1")) * v[full ^ t] for t in range(1 << n) if t & s == t)
        assert i_or[s] == pytest.approx(want, abs=1e-12)
    # v(S) = I_or(empty) + sum over non-empty T meeting S of I_or(T)
    rebuilt = [i_or[0] + sum(i_or[t] for t in range(1, 1 << n) if t & s) for s in range(1 << n)]
    np.testing.assert_allclose(rebuilt, v, atol=1e-12)
    np.testing.assert_allclose(or_values(torch.as_tensor(i_or)).numpy(), v, atol=1e-12)
    assert orders(3).tolist() == [0, 1, 1, 2, 1, 2, 2, 3]


def test_and_or_split_recovers_planted_and_and_or_terms():
    n = 5
    ands = {bits(0, 1): 2.0, bits(2, 3, 4): -1.5, bits(1): 0.7}
    ors = {bits(0, 3): 1.2, bits(2, 4): -0.8}
    v = planted(n, ands, ors)
    fit = fit_and_or(np.stack([v, 3.0 * v + 1.0]), steps=2500, lr=0.02, noise_bound=0.0)
    for row, (scale, shift) in enumerate([(1.0, 0.0), (3.0, 1.0)]):
        a, o = fit.and_BX[row], fit.or_BX[row]
        tol = 0.03 * scale
        for s in range(1, 1 << n):
            assert a[s] == pytest.approx(scale * ands.get(s, 0.0), abs=tol), ("and", s)
            assert o[s] == pytest.approx(scale * ors.get(s, 0.0), abs=tol), ("or", s)
        assert a[0] + o[0] == pytest.approx(shift, abs=1e-9)
        # the split reproduces v exactly (no offsets allowed here)
        rebuilt = zeta(torch.as_tensor(a)).numpy() + or_values(torch.as_tensor(o)).numpy()
        np.testing.assert_allclose(rebuilt, scale * v + shift, atol=1e-9)
    assert (fit.l1_end_B < fit.l1_start_B).all()
    assert (np.abs(fit.noise_BX) == 0).all()


def test_split_offsets_stay_within_their_bound():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(3, 1 << 4))
    fit = fit_and_or(v, steps=200, noise_bound=0.05)
    assert (np.abs(fit.noise_BX) <= 0.05 * fit.scale_B[:, None] + 1e-12).all()


def test_salient_rules_and_consistency_measures():
    n = 3
    a = np.zeros(1 << n)
    o = np.zeros(1 << n)
    a[bits(0)], a[bits(0, 1)], a[bits(0, 1, 2)], o[bits(1, 2)] = 1.0, -0.5, 0.01, 0.3
    assert set(salient(a, o, 1.0, "fraction", 0.05, 0)) == {("and", 1), ("and", 3), ("or", 6)}
    assert set(salient(a, o, 1.0, "topk", 0.0, 2)) == {("and", 1), ("and", 3)}
    same = compare((a, o, 1.0), (a, o, 1.0), "fraction", 0.05, 0)
    assert same["jaccard"] == 1.0 and same["n_shared"] == 3
    assert same["share"] == pytest.approx(1.8 / 1.81)
    assert same["order_shared"] == pytest.approx(5 / 3) and np.isnan(same["order_specific"])
    assert same["cancel_shared"] == pytest.approx(1 - 0.8 / 1.8)
    flipped = a.copy()
    flipped[bits(0, 1)] = 0.5  # same subset, other sign: not shared
    d = compare((a, o, 1.0), (flipped, o, 1.0), "fraction", 0.05, 0)
    assert d["n_shared"] == 2 and d["jaccard"] == pytest.approx(2 / 3)
    assert d["order_specific"] == 2.0 and d["cancel_specific"] == 0.0


def test_cluster_ci_resamples_documents():
    x = np.array([1.0, 1.0, 0.0, 0.0, np.nan])
    est, lo, hi, used = cluster_ci(x, np.array([0, 0, 1, 1, 2]), 500, 0)
    assert est == 0.5 and used == 4
    assert lo == 0.0 and hi == 1.0  # two documents, each all-or-nothing: the replicates are 0, 1/2 or 1


def test_config_validates():
    InteractionsConfig()
    with pytest.raises(ConfigError, match="ceiling_baseline"):
        InteractionsConfig(baseline="zero", ceiling_baseline="zero")
    with pytest.raises(ConfigError, match="n_words"):
        InteractionsConfig(n_words=20)


TEXT = ("The senator praised the brave farmers of Kansas for their patience. "
        "Congress will debate the budget of the navy and the army tomorrow morning.")


def _word_tokens(text: str, split_long: bool) -> DocTokens:
    """Each word one token (with ``split_long``: words over 6 letters cut in two tokens); ids from a dictionary."""
    spans = []
    for m in re.finditer(r"\w+|[^\w\s]", text):
        a, b = m.span()
        spans += [(a, a + 3), (a + 3, b)] if split_long and b - a > 6 else [(a, b)]
    vocab = {s: i for i, s in enumerate(sorted({text[a:b] for a, b in spans}))}
    return DocTokens(np.array([vocab[text[a:b]] for a, b in spans]), np.array([a for a, _ in spans]),
                     np.array([b for _, b in spans]))


def _select(top1, n_words=3, decode=lambda key, t: f"{key}{t}"):
    toks = {"a": [_word_tokens(TEXT, False)], "b": [_word_tokens(TEXT, True)]}
    return select_prompts([TEXT], [0], toks, {"a": [], "b": [99]}, lambda d, a, b: True, top1, decode,
                          n_words=n_words, n_prompts=5, max_sentences=10, max_tokens=64, seed=0), toks


def test_prompts_where_both_models_predict_the_true_next_word():
    (prompts, stats), toks = _select(oracle_for_sentence)
    assert stats["sentences_tried"] == 2 and len(prompts) == 2
    for p in prompts:
        assert p.via == "truth" and len(p.words) == 3
        assert all(w.lower() not in {"the", "of", "for", "their", "will", "and"} for w in p.word_texts)
        assert p.ids["b"][0] == 99  # b's special prefix leads its input and is never a word
        for key in ("a", "b"):
            tok = toks[key][0]
            nxt = int(np.searchsorted(tok.starts, p.stop))
            assert p.target[key] == tok.ids[nxt]  # the first token of the true next word
            for (ws, we), pos in zip(p.words, p.positions[key]):
                covered = [j for j in range(len(tok.ids)) if tok.starts[j] < we and tok.ends[j] > ws]
                assert len(pos) == len(covered)  # every token of the word, and only those
                if key == "b" and we - ws > 6:
                    assert len(pos) == 2


def oracle_for_sentence(key, ids):
    """Top-1 = the true next token: found by locating ``ids`` (after the prefix) inside the document."""
    tok = _word_tokens(TEXT, key == "b")
    body = ids[1:] if key == "b" else ids
    doc = tok.ids.tolist()
    for s in range(len(doc) - len(body) + 1):
        if doc[s:s + len(body)] == body.tolist():
            nxt = doc[s + 1:s + len(body)] + [doc[s + len(body)] if s + len(body) < len(doc) else -1]
            return np.array(([-1] if key == "b" else []) + nxt)
    raise AssertionError("prompt not found in the document")


def test_models_that_never_agree_are_one_clear_error():
    with pytest.raises(SaematchError, match=r"in 2 held-out sentences .* never agreed"):
        _select(lambda key, ids: np.zeros(len(ids), np.int64) - 1)


def test_plan_has_one_node_per_model_pair_reading_the_corpus_only(tmp_path):
    from saematch.config import RunConfig
    from saematch.configio import from_dict
    from saematch.graph.plan import build_plan

    base = {"run_dir": str(tmp_path), "models": [{"name": f"m{i}", "layers": [0]} for i in range(3)]}
    assert not build_plan(from_dict(RunConfig, base)).stage("interactions")
    plan = build_plan(from_dict(RunConfig, {**base, "interactions": {"enabled": True}}))
    nodes = plan.stage("interactions")
    assert [n.key for n in nodes] == [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    assert all(set(n.deps) == {"corpus", "corpus:split"} for n in nodes)
    assert {n.id for n in nodes} <= set(plan.nodes["report"].deps)
    other = build_plan(from_dict(RunConfig, {**base, "interactions": {"enabled": True, "n_words": 8}}))
    assert other.hashes[nodes[0].id] != plan.hashes[nodes[0].id]
    threads = build_plan(from_dict(RunConfig, {**base, "interactions": {"enabled": True, "batch_size": 8}}))
    assert threads.hashes[nodes[0].id] == plan.hashes[nodes[0].id]  # inference batch size changes no result
