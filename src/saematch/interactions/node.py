"""The interactions node of the pipeline graph: one per model pair, ``interactions/<A>__<B>/``.

Reads the corpus and the document split only (no activations, no SAEs).  Writes

    prompts.parquet       prompt, doc, text, words, target word, per-model target tokens and lengths
    interactions.parquet  one row per (prompt, model, baseline, S): v, raw AND (Moebius), fitted AND and OR
                          interactions, offsets, saliency
    consistency.parquet   one row per (prompt, comparison): the measures of saematch.interactions.consistency
    orders.parquet        comparison, kind (shared / specific), order, count: the order histograms
    summary.json          pooled measures with CIs over documents, split diagnostics, forward counts, throughput
    manifest.json         last

Each (model, baseline) block of v is kept under ``parts/`` as it is computed, tagged with the node's
hash and the prompts, so a killed build resumes with the blocks it finished.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _doc_tokens(corpus_root: Path, key: str) -> list[Any]:
    import pyarrow.parquet as pq

    from saematch.interactions.prompts import DocTokens

    t = pq.read_table(corpus_root / f"tokens_{key}.parquet").to_pydict()
    return [DocTokens(np.asarray(i, np.int64), np.asarray(s, np.int64), np.asarray(e, np.int64))
            for i, s, e in zip(t["ids"], t["starts"], t["ends"])]


def _prompts(ctx: Any, ka: str, kb: str) -> tuple[list[Any], dict, np.ndarray]:
    """The node's prompts, and the train documents (for the mean embedding)."""
    import torch

    from saematch.interactions.prompts import select_prompts
    from saematch.matching.stage import train_mask

    cfg, corpus = ctx.cfg.interactions, ctx.corpus
    units = corpus.units
    train = np.asarray(train_mask(ctx), bool)
    doc_u, start_u = units["doc"].to_numpy(), units["char_start"].to_numpy()
    train_docs = np.unique(doc_u[train])
    test_docs = sorted(set(np.unique(doc_u[~train]).tolist()))
    by_doc = {d: (start_u[doc_u == d], train[doc_u == d]) for d in test_docs}

    def test_span(d: int, a: int, b: int) -> bool:
        s, tr = by_doc[d]
        inside = (s >= a) & (s < b)
        return bool(inside.any() and not tr[inside].any())

    models = {k: ctx.model(ctx.spec(k)) for k in (ka, kb)}
    toks = {k: ctx.tokenizer(ctx.spec(k)) for k in (ka, kb)}

    def top1(key: str, ids: np.ndarray) -> np.ndarray:
        return models[key].next_token_logprobs(torch.as_tensor(ids)[None])[0].argmax(-1).cpu().numpy()

    def decode(key: str, tid: int) -> str:
        return toks[key].decode([int(tid)])

    prompts, stats = select_prompts(corpus.texts, test_docs, {k: _doc_tokens(ctx.layout.corpus(), k) for k in (ka, kb)},
                                    {k: corpus.prefix(k) for k in (ka, kb)}, test_span, top1, decode, cfg.n_words,
                                    cfg.n_prompts, cfg.max_sentences, cfg.max_prompt_tokens, cfg.seed)
    return prompts, stats, train_docs


def _fingerprint(prompts: list[Any]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(repr((p.doc, p.start, p.stop, p.words, sorted((k, v.tolist()) for k, v in p.ids.items()),
                       sorted(p.target.items()))).encode())
    return h.hexdigest()


def _values(ctx: Any, out: Path, chash: str, prompts: list[Any], variant_key: str, baseline: str,
            train_docs: np.ndarray) -> tuple[np.ndarray, dict]:
    """v ``[P, 2^n]`` of one (model variant, baseline), from ``parts/`` when this build already computed it."""
    import torch

    from saematch.artifacts import atomic_path
    from saematch.graph.plan import variant
    from saematch.interactions.values import all_values, baseline_vector

    cfg = ctx.cfg.interactions
    part = out / "parts" / f"{variant_key}__{baseline}.npz"
    tag = f"{chash}:{_fingerprint(prompts)}"
    if part.is_file():
        try:
            with np.load(part) as z:
                if str(z["tag"]) == tag:
                    return z["v"], {"forwards": int(z["forwards"]), "seconds": float(z["seconds"]), "resumed": True}
        except Exception:  # a torn part is recomputed, never read
            pass
    va = variant(variant_key)
    spec = ctx.spec(variant_key)
    adapter = ctx.model(spec, random_init=va.kind == "random")
    ids = ctx.corpus.token_ids(va.source)
    base = baseline_vector(adapter, baseline, ctx.tokenizer(spec), [ids[int(d)] for d in train_docs])
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        res = all_values(adapter, prompts, va.source, base, cfg.batch_size)
    finally:
        torch.set_num_threads(threads)
    with atomic_path(part) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, v=res.v_PX, tag=np.array(tag), forwards=res.forwards, seconds=res.seconds)
    log.info("interactions: %s (%s baseline): %d masked forwards in %.1f s (%.1f / s)", variant_key, baseline,
             res.forwards, res.seconds, res.per_second)
    return res.v_PX, {"forwards": res.forwards, "seconds": res.seconds, "resumed": False}


def comparisons(ka: str, kb: str, base: str, ceil: str, random_key: str | None, n_prompts: int,
                docs: list[int]) -> list[tuple[str, tuple[str, str], tuple[str, str], np.ndarray]]:
    """(name, (model, baseline) of side a, of side b, prompt of side b for each prompt of side a)."""
    same = np.arange(n_prompts)
    order = np.argsort(np.asarray(docs), kind="stable")
    biggest = int(np.bincount(np.asarray(docs)).max())
    shift = biggest if 2 * biggest <= n_prompts else 1  # other documents where there are enough of them
    other = np.empty(n_prompts, np.int64)
    other[order] = order[(np.arange(n_prompts) + shift) % n_prompts]
    out = [("pair", (ka, base), (kb, base), same)]
    if random_key is not None:
        a, b = ((random_key, base), (kb, base)) if random_key.startswith(ka + "@") else ((ka, base), (random_key, base))
        out.append(("floor_random", a, b, same))
    out += [("floor_prompt", (ka, base), (kb, base), other),
            ("ceiling_a", (ka, base), (ka, ceil), same), ("ceiling_b", (kb, base), (kb, ceil), same)]
    return out


def build(node: Any, ctx: Any, chash: str) -> None:
    """Prompts, v(S), AND-OR splits and consistency for the model pair ``node.key = (A, B)``."""
    import torch

    from saematch.artifacts import Stage, write_json
    from saematch.graph.plan import random_keys
    from saematch.interactions.consistency import compare, pooled
    from saematch.interactions.mobius import fit_and_or, mobius, orders, salient
    from saematch.matching.store import write_parquet

    ka, kb = node.key
    cfg, out = ctx.cfg.interactions, Path(node.path)
    stage = Stage(out)
    stage.invalidate()
    prompts, pstats, train_docs = _prompts(ctx, ka, kb)
    rand = next((f"{k}@random" for k in (ka, kb) if k in random_keys(ctx.cfg)), None)
    docs = [p.doc for p in prompts]
    comps = comparisons(ka, kb, cfg.baseline, cfg.ceiling_baseline, rand, len(prompts), docs)
    blocks = list(dict.fromkeys(side for c in comps for side in c[1:3]))
    values, cost = {}, {}
    for key, base in blocks:
        values[key, base], cost[f"{key}/{base}"] = _values(ctx, out, chash, prompts, key, base, train_docs)
    v_all = np.concatenate([values[b] for b in blocks])
    split = fit_and_or(v_all, cfg.andor_steps, cfg.andor_lr, cfg.noise_bound, cfg.seed)
    P, n = len(prompts), cfg.n_words
    at = {b: i * P for i, b in enumerate(blocks)}

    def side(b: tuple[str, str], p: int) -> tuple[np.ndarray, np.ndarray, float]:
        r = at[b] + p
        return split.and_BX[r], split.or_BX[r], float(split.scale_B[r])

    rows, hist = [], []
    for name, a, b, partner in comps:
        for p in range(P):
            res = compare(side(a, p), side(b, int(partner[p])), cfg.salient, cfg.salient_fraction, cfg.top_k)
            rows.append({"prompt": p, "doc": docs[p], "partner": int(partner[p]), "comparison": name,
                         "model_a": a[0], "baseline_a": a[1], "model_b": b[0], "baseline_b": b[1],
                         **{k: v for k, v in res.items() if not k.endswith(("_orders", "_keys"))},
                         "shared": [f"{k}:{s}" for k, s in res["shared_keys"]]})
            hist += [(name, "shared", o) for o in res["shared_orders"]]
            hist += [(name, "specific", o) for o in res["specific_orders"]]
    cons = pd.DataFrame(rows)
    hist_df = (pd.DataFrame(hist, columns=["comparison", "kind", "order"]).value_counts().rename("count")
               .reset_index().sort_values(["comparison", "kind", "order"], kind="stable"))
    raw_and = mobius(torch.as_tensor(v_all)).numpy()
    order_X = orders(n)
    subsets = np.arange(1 << n)
    tables = []
    for i, (key, base) in enumerate(blocks):
        for p, pr in enumerate(prompts):
            r = i * P + p
            a_X, o_X, s = split.and_BX[r], split.or_BX[r], float(split.scale_B[r])
            sal = salient(a_X, o_X, s, cfg.salient, cfg.salient_fraction, cfg.top_k)
            tables.append(pd.DataFrame({
                "prompt": p, "doc": pr.doc, "model": key, "baseline": base, "S": subsets, "order": order_X,
                "words": ["+".join(w for j, w in enumerate(pr.word_texts) if s_ >> j & 1) for s_ in subsets],
                "v": v_all[r], "and_raw": raw_and[r], "and_I": a_X, "or_I": o_X, "gamma": split.gamma_BX[r],
                "noise": split.noise_BX[r],
                "salient_and": [("and", int(s_)) in sal for s_ in subsets],
                "salient_or": [("or", int(s_)) in sal for s_ in subsets]}))
    inter = pd.concat(tables, ignore_index=True)
    pr_df = pd.DataFrame([{"prompt": i, "doc": p.doc, "start": p.start, "stop": p.stop, "text": p.text,
                           "words": list(p.word_texts), "target_word": p.target_word, "via": p.via,
                           **{f"target_{k}": int(p.target[k]) for k in (ka, kb)},
                           **{f"tokens_{k}": int(len(p.ids[k])) for k in (ka, kb)},
                           **{f"word_tokens_{k}": [int(len(x)) for x in p.positions[k]] for k in (ka, kb)}}
                          for i, p in enumerate(prompts)])
    files = []
    for name, df in [("prompts", pr_df), ("interactions", inter), ("consistency", cons), ("orders", hist_df)]:
        write_parquet(df, out / f"{name}.parquet")
        files.append(out / f"{name}.parquet")
    forwards = sum(c["forwards"] for c in cost.values())
    secs = sum(c["seconds"] for c in cost.values() if not c["resumed"])
    efficiency = float(np.abs(raw_and.sum(-1) - v_all[:, -1]).max())
    summary = {"model_a": ka, "model_b": kb, "random_control": rand, "n_words": n, "prompts": P,
               "documents": len(set(docs)), "selection": pstats,
               "pooled": pooled(cons, cfg.n_bootstrap, cfg.seed),
               "split": {"l1_raw_mean": float(split.l1_start_B.mean()), "l1_split_mean": float(split.l1_end_B.mean()),
                         "max_offset_rel": float((np.abs(split.noise_BX).max(-1) / split.scale_B).max()),
                         "efficiency_max_error": efficiency},
               "forwards": forwards, "cost": cost,
               "forwards_per_second": forwards / secs if secs > 0 else None}
    write_json(out / "summary.json", summary)
    files.append(out / "summary.json")
    stage.finish(chash, files, model_a=ka, model_b=kb, prompts=P, forwards=forwards)
    pair = next(r for r in summary["pooled"] if r["comparison"] == "pair")
    log.info("interactions %s vs %s: %d prompts, Jaccard of salient sets %.3f [%.3f, %.3f], %d masked forwards",
             ka, kb, P, pair["jaccard"], pair["jaccard_lo"], pair["jaccard_hi"], forwards)


def report_section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """The report's interactions section: (title, self-contained HTML, figures written under ``out``)."""
    from saematch.interactions.report import section

    return section(ctx, Path(out))
