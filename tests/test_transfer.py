"""Transfer across models: maps recover planted relations, steering matches a manual forward,
probes transfer through a planted map and not through a random one, labels come from the text."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from saematch.errors import ConfigError, SaematchError
from saematch.transfer import (
    MLPMap,
    RidgeCVMap,
    TransferConfig,
    WhitenedProcrustesMap,
    load_map,
    probe_transfer,
    r2_score,
    run_transfer,
    sae_transfer,
    save_map,
    steering_transfer,
    unit_labels,
)
from saematch.transfer.labels import concept_context_mask, doc_year, task_labels
from saematch.transfer.steering import concept_token_ids, heldout_prompts, selective_features

ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3)


def _planted(n: int, d_in: int, d_out: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in)) * rng.uniform(0.5, 3.0, d_in)
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out)
    return X, W, b, X @ W + b + noise * rng.standard_normal((n, d_out))


def _orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", [0, 1])
def test_ridge_recovers_planted_map_and_picks_small_alpha(seed, tmp_path):
    X, W, b, Y = _planted(400, 12, 9, noise=0.01, seed=seed)
    m = RidgeCVMap(ALPHAS, cv_folds=4, seed=seed).fit(X[:300], Y[:300])
    assert np.abs(m.W_ - W).max() < 0.01
    assert np.abs(m.b_ - b).max() < 0.02
    assert m.alpha_rel_ <= 1e-3
    from sklearn.linear_model import Ridge

    sk = Ridge(alpha=m.alpha_).fit(X[:300], Y[:300])  # the closed form is scikit-learn's ridge
    np.testing.assert_allclose(m.W_, sk.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.b_, sk.intercept_, rtol=1e-6, atol=1e-9)
    assert m.score(X[300:], Y[300:]) > 0.999
    assert m.cosine(X[300:], Y[300:]) > 0.999
    save_map(m, tmp_path / "ridge")
    back = load_map(tmp_path / "ridge")
    assert isinstance(back, RidgeCVMap) and back.alpha_ == m.alpha_
    np.testing.assert_allclose(back.transform(X[300:]), m.transform(X[300:]), rtol=1e-5, atol=1e-4)


def test_ridge_picks_large_alpha_for_noisy_collinear_inputs():
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((80, 3))  # 40 input dims that are noisy copies of 3 latents
    X = Z @ rng.standard_normal((3, 40)) + 0.3 * rng.standard_normal((80, 40))
    Y = Z @ rng.standard_normal((3, 5)) + 1.0 * rng.standard_normal((80, 5))
    noisy = RidgeCVMap(ALPHAS, cv_folds=4).fit(X[:60], Y[:60])
    Xc, _, _, Yc = _planted(80, 40, 5, noise=0.01, seed=3)
    clean = RidgeCVMap(ALPHAS, cv_folds=4).fit(Xc[:60], Yc[:60])
    assert noisy.alpha_rel_ >= 0.1 > clean.alpha_rel_
    # the chosen alpha beats a near-unregularised fit on held-out units
    loose = RidgeCVMap((1e-5,), cv_folds=4).fit(X[:60], Y[:60])
    assert noisy.score(X[60:], Y[60:]) > loose.score(X[60:], Y[60:])


def test_ridge_alpha_path_scores_match_explicit_fits():
    from sklearn.linear_model import Ridge

    from saematch.transfer.maps import _ridge_path_r2

    X, _, _, Y = _planted(120, 15, 4, noise=2.0, seed=7)
    grid = np.array([1e-2, 1.0, 100.0, 1e4])
    path = _ridge_path_r2(X[:90], Y[:90], X[90:], Y[90:], grid)
    direct = [r2_score(Y[90:], Ridge(alpha=a).fit(X[:90], Y[:90]).predict(X[90:])) for a in grid]
    np.testing.assert_allclose(path, direct, rtol=1e-8, atol=1e-10)


def test_r2_is_variance_weighted_and_zero_for_the_mean():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((50, 3)) * np.array([10.0, 1.0, 1.0])
    assert r2_score(Y, np.broadcast_to(Y.mean(0), Y.shape)) == pytest.approx(0.0, abs=1e-12)
    P = Y.copy()
    P[:, 1:] = Y[:, 1:].mean(0)  # the high-variance dim exact, the two small ones at their mean
    assert r2_score(Y, P) == pytest.approx(1 - (Y[:, 1:].var(0).sum()) / Y.var(0).sum())


def test_whitened_procrustes_recovers_a_planted_rotation(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 6)) @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]) + 4.0
    R = _orthogonal(6, 2)
    Y = X @ R - 1.0
    m = WhitenedProcrustesMap(whiten_eps=0.0).fit(X, Y)
    np.testing.assert_allclose(m.Q_, R, atol=1e-6)
    np.testing.assert_allclose(m.transform(X), Y, atol=1e-6)
    W, _ = m.linear_part()
    np.testing.assert_allclose(W, R, atol=1e-6)  # whiten, rotate, re-colour = R itself
    save_map(m, tmp_path / "proc")
    np.testing.assert_allclose(load_map(tmp_path / "proc").transform(X), Y, atol=1e-3)


def test_mlp_beats_ridge_on_a_nonlinear_relation_and_roundtrips(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((600, 6))
    Y = np.abs(X @ rng.standard_normal((6, 4))) + 0.5 * X[:, :4]  # ridge explains ~10% of this
    ridge = RidgeCVMap(ALPHAS, cv_folds=3).fit(X[:480], Y[:480])
    mlp = MLPMap(hidden=64, epochs=40, patience=5, lr=3e-3, batch=64, seed=0).fit(
        X[:480], Y[:480], init_linear=ridge.linear_part())
    assert mlp.score(X[480:], Y[480:]) > ridge.score(X[480:], Y[480:]) + 0.5
    # its linear part is the exact mean Jacobian of transform
    mx = torch.from_numpy(mlp.mx_)

    def f(x: torch.Tensor) -> torch.Tensor:
        return mlp.net_(((x - mx) / mlp.sx_).float()) * mlp.sy_

    J = np.mean([torch.autograd.functional.jacobian(f, x).numpy() for x in torch.from_numpy(X[480:500])], axis=0)
    assert J.shape == (4, 6)
    np.testing.assert_allclose(mlp.mean_jacobian(X[480:500]), J.T, rtol=1e-4, atol=1e-5)
    save_map(mlp, tmp_path / "mlp")
    np.testing.assert_allclose(load_map(tmp_path / "mlp").transform(X[480:]), mlp.transform(X[480:]), atol=1e-5)
    # same seed, same map
    again = MLPMap(hidden=64, epochs=40, patience=5, lr=3e-3, batch=64, seed=0).fit(
        X[:480], Y[:480], init_linear=ridge.linear_part())
    np.testing.assert_array_equal(again.transform(X[480:]), mlp.transform(X[480:]))


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from saematch.adapter import ModelAdapter

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)  # logits of order 1, so steering effects stand far above float noise
    return ModelAdapter(model.eval(), name="tiny")


def test_steering_at_the_last_layer_matches_a_manual_forward(tiny_llama):
    ids = torch.randint(0, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    v = torch.randn(16, generator=torch.Generator().manual_seed(1)) * 3
    model = tiny_llama.model
    with torch.no_grad():
        h = tiny_llama.resid_post(ids, [1])[1]  # raw residual after the last block, before the final norm
        want = torch.log_softmax(model.lm_head(model.model.norm(h + v)), -1)
        plain = torch.log_softmax(model(input_ids=ids).logits, -1)
    got = tiny_llama.next_token_logprobs(ids, layer=1, add=v)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny_llama.next_token_logprobs(ids), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny_llama.next_token_logprobs(ids, layer=1, add=v, keep_last=2), want[:, -2:])
    # per-row vectors and a callable give the same as the tensor
    per_row = tiny_llama.next_token_logprobs(ids, layer=1, add=v.expand(3, 1, 16))
    torch.testing.assert_close(per_row, tiny_llama.next_token_logprobs(ids, layer=1, add=lambda r: v.expand_as(r)))
    torch.testing.assert_close(per_row, got)


def test_steering_transfer_planted_direction_beats_random(tiny_llama):
    model = tiny_llama.model
    target = np.array([5, 6])
    # at the last layer, the direction norm_weight * (sum of the targets' unembeddings) raises their logits
    v = (model.lm_head.weight[target].sum(0) * model.model.norm.weight).detach().double().numpy()
    other = np.random.default_rng(0).standard_normal(16)
    prompts = torch.randint(0, 40, (6, 8), generator=torch.Generator().manual_seed(2))
    table = steering_transfer(tiny_llama, prompts, 1, {("planted", "good"): (v, v), ("planted", "bad"): (v, other)},
                              {"good": target, "bad": target}, ref_norm=4.0, scales=(1.0, 4.0), n_random=5,
                              eval_positions=3, batch=16, seed=0)
    good, bad = table[table.concept == "good"], table[table.concept == "bad"]
    assert len(table) == 4 and (good.effect_native > 0).all()
    np.testing.assert_allclose(good.ratio, 1.0, atol=1e-5)  # a perfect map carries the native effect
    assert good.success.all() and (good.success_rate == 1.0).all()
    assert (bad.effect_mapped < bad.effect_native).all()
    assert (table.effect_native > table.effect_random_max).all()


def test_selective_features_finds_the_planted_concept_feature():
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=4, d_sae=4, k=1))
    with torch.no_grad():  # feature j reads coordinate j; top-1 keeps the largest
        sae.W_enc.copy_(torch.eye(4))
        sae.b_enc.zero_()
    rng = np.random.default_rng(0)
    X = np.abs(rng.standard_normal((200, 4))).astype(np.float32)
    mask = np.zeros(200, bool)
    mask[::4] = True
    X[mask, 2] += 3.0
    got = selective_features(sae, X, np.stack([mask, ~mask]), feature_a=np.array([3, 2, 0, 1]), batch=64)
    assert got[0] == 1  # position of feature 2 in feature_a
    assert got[1] != 1


def _units_from(texts: list[str]) -> pd.DataFrame:
    rows = []
    for d, t in enumerate(texts):
        for m in re.finditer(r"\w+(?:[.,]\d+)*|[^\w\s]", t):
            rows.append({"doc": d, "char_start": m.start(), "char_end": m.end(), "text": m.group()})
    return pd.DataFrame(rows)


def test_labels_come_from_the_corpus():
    texts = ['In 1850 the "Union Army" was strong. He met Lincoln in Ohio, and I said 3,000.', "Then we left."]
    units = _units_from(texts)
    lab = unit_labels(units, texts, ["1850-Fillmore-1", "notes"])
    by = dict(zip(units["text"], range(len(units))))
    assert lab.number[by["1850"]] and lab.number[by["3,000"]] and not lab.number[by["In"]]
    cap = set(units.text[lab.capitalised.to_numpy()])
    assert cap == {"Union", "Army", "Lincoln", "Ohio"}  # not 'In', 'He', 'Then' (sentence starts) nor 'I'
    assert list(units.text[lab.quoted.to_numpy()]) == ["Union", "Army", '"']  # the closing quote is inside
    assert bool(lab.before_1900[by["He"]]) and pd.isna(lab.before_1900[by["Then"]])
    assert doc_year("2024-Biden-1") == 2024 and doc_year("speech") is None
    y, known = task_labels(lab, "before_1900")
    assert known.sum() == (units.doc == 0).sum() and y[known].all()
    mask = concept_context_mask(units, {"lincoln"}, context_units=3)
    assert list(units.text[mask]) == ["Lincoln", "in", "Ohio"]


def test_probe_transfers_through_a_planted_map_not_a_random_one():
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((900, 6))
    y = (Z[:, 0] + 0.5 * Z[:, 1] > 0).astype(int)
    XA = Z @ rng.standard_normal((6, 14)) + 0.1 * rng.standard_normal((900, 14))
    XB = Z @ rng.standard_normal((6, 10)) + 0.1 * rng.standard_normal((900, 10))
    tr, te = slice(0, 700), slice(700, None)
    b2a = RidgeCVMap(ALPHAS, cv_folds=4).fit(XB[tr], XA[tr])
    random_map = rng.standard_normal((10, 14))
    rows = probe_transfer(XA[tr], XB[tr], y[tr], XA[te], XB[te], y[te],
                          {"ridge": b2a.transform(XB[te]), "random": XB[te] @ random_map}, "planted")
    got = {r["map"]: r for r in rows}
    assert got["ridge"]["acc_a"] > 0.95 and got["ridge"]["acc_b"] > 0.95
    assert got["ridge"]["acc_transfer"] > 0.9
    assert got["random"]["bacc_transfer"] < 0.75
    assert 0.4 < got["ridge"]["chance"] < 0.6


def test_single_class_labels_give_one_clear_error():
    X = np.random.default_rng(0).standard_normal((40, 4))
    y = np.zeros(40, dtype=int)
    with pytest.raises(SaematchError, match="probe task 'number' has only negative labels"):
        probe_transfer(X, X, y, X, X, np.r_[y[:-1], 1], {"ridge": X}, "number")
    lab = pd.DataFrame({"before_1900": pd.array([pd.NA] * 3, dtype="boolean")})
    with pytest.raises(SaematchError, match="no labelled units"):
        task_labels(lab, "before_1900")
    with pytest.raises(ConfigError, match="unknown task 'pos'"):
        TransferConfig(tasks=("pos",))


def test_sae_transfer_scores_b_sae_on_mapped_a():
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=24, k=4))
    XB = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    same, table = sae_transfer(sae, XB, XB, floor=0.5, batch=64)
    assert same.fvu_mapped == pytest.approx(same.fvu_native) and same.fvu_map == 0.0
    assert same.frac_above_floor == 1.0 and same.l0_native == pytest.approx(4.0)
    assert len(table) == 24 and np.allclose(table["corr"].dropna(), 1.0)
    shuffled, _ = sae_transfer(sae, XB[::-1].copy(), XB, floor=0.5, batch=64)
    assert shuffled.frac_above_floor < 0.2 and shuffled.fvu_mapped > same.fvu_native
    assert sae_transfer(sae, XB, XB, floor=None)[0].frac_above_floor is None


def test_mlp_from_an_honest_ridge_learns_what_ridge_misses_in_many_dims():
    # many dims for few units: a ridge fitted on every training row fits the MLP's validation rows in
    # sample, so early stopping judged against it never left epoch 0; init_alpha refits it without them
    rng = np.random.default_rng(7)
    X = rng.standard_normal((700, 40))
    Y = 0.2 * X @ rng.standard_normal((40, 12)) + 2 * np.abs(X[:, :12]) + 0.5 * rng.standard_normal((700, 12))
    ridge = RidgeCVMap(ALPHAS, cv_folds=3).fit(X[:500], Y[:500])
    mlp = MLPMap(hidden=64, epochs=30, patience=4, lr=1e-3, batch=64, seed=0).fit(X[:500], Y[:500], init_alpha=ridge.alpha_)
    assert mlp.best_epoch_ > 0
    assert mlp.score(X[500:], Y[500:]) > ridge.score(X[500:], Y[500:])


def test_run_transfer_writes_tables_and_reruns_identically(tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    from conftest import sotu_texts
    from saematch.adapter import load_model
    from saematch.similarity.semantic import load_concepts

    texts = sotu_texts(n_docs=3, chars=3000)
    units = _units_from(texts)
    adapter = load_model(str(tiny_dir / "llama"), tmp_path / "cache", dtype="float32")
    tok = AutoTokenizer.from_pretrained(str(tiny_dir / "llama"))
    rng = np.random.default_rng(0)
    XA = rng.standard_normal((len(units), 12)) + 3 * units["text"].str.istitle().to_numpy()[:, None]
    XB = XA @ rng.standard_normal((12, adapter.d_model)) + 0.1 * rng.standard_normal((len(units), adapter.d_model))
    ids = [np.asarray(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    sae_a, sae_b = TopKSAE(TopKSAEConfig(d_in=12, d_sae=24, k=3)), TopKSAE(TopKSAEConfig(d_in=adapter.d_model, d_sae=24, k=3))
    pairs = pd.DataFrame({"feature_a": np.arange(24), "feature_b": np.arange(24)[::-1].copy()})
    cfg = TransferConfig(mlp_hidden=16, mlp_epochs=3, n_prompts=3, prompt_tokens=10, eval_positions=3,
                         steering_scales=(0.5,), n_random=2, tasks=("capitalised",), min_concept_units=5,
                         max_units=None)
    kw = dict(model_a="a", layer_a=1, model_b="b", layer_b=2, texts=texts, doc_ids=["1801-Jefferson-1", "1990-Bush-1",
              "2002-Bush-1"], concepts=load_concepts(None), adapter_b=adapter, tokenizer_b=tok,
              prompts_b=heldout_prompts(ids, [], 3, 10), sae_a=sae_a, sae_b=sae_b, pairs=pairs)
    res = run_transfer(XA, XB, units, cfg, tmp_path / "one", config_hash="h", **kw)
    assert res.r2["ridge_a2b"] > 0.9 and set(res.r2) == {f"{m}_{d}" for m in cfg.maps for d in ("a2b", "b2a")}
    assert (tmp_path / "one" / "maps" / "mlp_b2a.safetensors").is_file() and (tmp_path / "one" / "manifest.json").is_file()
    steer = pd.read_parquet(tmp_path / "one" / "steering.parquet")
    assert {"effect_native", "effect_mapped", "effect_random", "ratio"} <= set(steer.columns)
    assert set(steer.kind) == {"diffmean", "feature"} and steer.groupby("kind").size().nunique() == 1
    sae = pd.read_parquet(tmp_path / "one" / "sae.parquet")
    assert set(sae["map"]) == set(cfg.maps) and sae.frac_above_floor.isna().all()  # no floor given: none claimed
    assert res.sae is not None and res.sae["fvu_map"] == pytest.approx(1 - res.r2["ridge_a2b"])
    probes = pd.read_parquet(tmp_path / "one" / "probes.parquet")
    assert set(probes.task) == {"capitalised"} and set(probes["map"]) == set(cfg.maps)
    again = run_transfer(XA, XB, units, cfg, tmp_path / "two", **kw)
    assert again.r2 == res.r2
    for name in ("maps.parquet", "steering.parquet", "probes.parquet", "sae.parquet"):
        a, b = pd.read_parquet(tmp_path / "one" / name), pd.read_parquet(tmp_path / "two" / name)
        pd.testing.assert_frame_equal(a.drop(columns=["fit_s"], errors="ignore"), b.drop(columns=["fit_s"], errors="ignore"))
    assert len(concept_token_ids(tok, {"union"})) >= 1
    # every document is after 1900: the task has one class, and the run stops before fitting anything
    year_cfg = TransferConfig(tasks=("capitalised", "before_1900"))
    with pytest.raises(SaematchError, match="probe task 'before_1900' has only negative labels"):
        run_transfer(XA, XB, units, year_cfg, tmp_path / "three", **kw)
    assert not (tmp_path / "three" / "maps").exists()
