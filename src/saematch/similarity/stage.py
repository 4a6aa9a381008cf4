"""The compare node: similarity scores over the layer grid, best layers, depth agreement, concepts."""

from __future__ import annotations

import logging
import os
from typing import Any

from saematch.config import ModelSpec

log = logging.getLogger(__name__)


def score_layer_pair(X, Y, A, B, concept_in, cfg, concepts) -> tuple[list[dict], list[dict]]:
    """All scores of one layer pair; a top-level function so worker processes can run it.

    X, Y: decoder rows of the (sub-sampled) matched pairs, or None when fewer than 3.
    A, B: raw activations of the same sampled units.  concept_in: (pairs, dec_a,
    dec_b, top_words_a, top_words_b) for the semantic subspaces.
    """
    from saematch.similarity.grid import score_space
    from saematch.similarity.semantic import concept_scores

    rows = score_space(X, Y, cfg.feature_metrics, cfg, "features") if X is not None else []
    rows += score_space(A, B, cfg.activation_metrics, cfg, "activations")
    return rows, concept_scores(*concept_in, cfg, concepts)


def layer_search(A, Bs: dict, names: tuple[str, ...], cfg) -> list[dict]:
    """For one A layer: the best B layer per metric, calibrated against the null of the maximum over B's layers.

    A: raw activations of the sampled units; Bs: {layer_b: activations of the same units}.  One row
    permutation is applied to every B layer and the maximum taken inside it (Gröger et al.), so searching
    over B's layers does not inflate the chance of beating the null.
    """
    from saematch.calibration.permcal import DEFAULT_PERMUTATIONS, layer_search_calibrate
    from saematch.similarity.base import get_metric
    from saematch.similarity.grid import metric_params

    layers_b = sorted(Bs)
    rows = []
    for name in names:
        m = get_metric(name, **metric_params(cfg, name))
        r = layer_search_calibrate(m, [A], [Bs[lb] for lb in layers_b], DEFAULT_PERMUTATIONS, seed=cfg.seed)
        res = r.result
        rows.append({"metric": name, "best_layer_b": layers_b[r.best[1]], "score": float(r.scores_AB[r.best]),
                     "calibrated": res.calibrated, "p_value": res.p_value, "tau": res.tau,
                     "n_permutations": res.n_permutations, "alpha": res.alpha, "n_layers_b": len(layers_b),
                     "n_units": int(A.shape[0]), "higher_is_similar": m.higher_is_similar})
    return rows


def _decoder(lay, spec: ModelSpec, layer: int):
    from saematch.sae.load import load_sae_dir

    return load_sae_dir(lay.sae(spec.key, layer)).W_dec.detach().float().numpy()


def headline(scores, depth) -> dict:
    """Per metric: mean score, how many layer pairs beat their permutation null (p < 0.05), and depth agreement."""
    out = {}
    for metric, g in scores.groupby("metric"):
        beat = g["p_value"].dropna()
        out[metric] = {"mean_score": float(g["score"].mean()), "max_score": float(g["score"].max()),
                       "n_layer_pairs": int(len(g)), "n_beat_null": int((beat < 0.05).sum()), "n_tested": int(len(beat))}
        d = depth[depth.metric == metric]
        if len(d):
            out[metric]["spearman_depth"] = float(d["spearman_depth"].iloc[0])
            out[metric]["depth_p_value"] = float(d["p_value"].iloc[0])
            out[metric]["depth_p_reason"] = str(d["p_reason"].iloc[0])
    return out


def build(node: Any, ctx: Any, chash: str) -> None:
    """Layer pairs are scored in ``similarity.workers`` processes (joblib, one BLAS thread each);
    every job uses the same seeds, so results do not depend on the number."""
    import numpy as np
    import pandas as pd
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from saematch.artifacts import Stage, write_json
    from saematch.graph.plan import layer_pairs, model_pairs
    from saematch.matching.store import write_parquet
    from saematch.similarity.grid import best_layers, depth_agreement
    from saematch.similarity.semantic import load_concepts

    cfg, lay = ctx.cfg, ctx.layout
    out = node.path
    stage = Stage(out)
    stage.invalidate()
    sc = cfg.similarity
    concepts = load_concepts(sc.concepts)
    rng = np.random.default_rng(sc.seed)
    test = np.flatnonzero(ctx.split.test_mask)  # the documents no SAE or pairing has seen
    n_units = len(test)
    units = np.sort(rng.choice(test, size=min(sc.max_units, n_units), replace=False))
    if sc.max_units < n_units:
        log.info("compare: raw-activation metrics on %d of %d test units (similarity.max_units)", sc.max_units, n_units)
    acts = {(m.key, L): ctx.store(m.key, L).take(units).numpy() for m in cfg.models for L in m.layers}
    dec = {(m.key, L): _decoder(lay, m, L) for m in cfg.models for L in m.layers}
    words = {(m.key, L): pd.read_parquet(lay.features(m.key, L) / "cards.parquet", columns=["top_words"])["top_words"]
             for m in cfg.models for L in m.layers}
    jobs, keys, n_sub = [], [], 0
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            pairs = pd.read_parquet(lay.pairs(a.key, la, b.key, lb) / "pairs.parquet")
            kept = pairs[pairs["keep"]]
            sub = kept.sample(sc.max_pairs, random_state=sc.seed) if len(kept) > sc.max_pairs else kept
            n_sub += len(kept) > sc.max_pairs
            da, db = dec[a.key, la], dec[b.key, lb]
            X, Y = (da[sub["feature_a"].to_numpy()], db[sub["feature_b"].to_numpy()]) if len(sub) >= 3 else (None, None)
            concept_in = (kept, da, db, words[a.key, la], words[b.key, lb])
            jobs.append(delayed(score_layer_pair)(X, Y, acts[a.key, la], acts[b.key, lb], concept_in, sc, concepts))
            keys.append({"model_a": a.key, "layer_a": la, "model_b": b.key, "layer_b": lb})
    if n_sub:
        log.info("compare: feature metrics on %d sampled pairs in %d layer pairs (similarity.max_pairs)", sc.max_pairs, n_sub)
    workers = sc.workers or os.cpu_count() or 1
    search_names = tuple(n for n in sc.activation_metrics if n in sc.null_metrics) if sc.n_permutations else ()
    search_jobs, search_keys = [], []
    for a, b in model_pairs(cfg):
        by_a: dict[int, list[int]] = {}
        for la, lb in layer_pairs(cfg, a, b):
            by_a.setdefault(la, []).append(lb)
        for la, lbs in by_a.items():
            if search_names:
                search_jobs.append(delayed(layer_search)(acts[a.key, la], {lb: acts[b.key, lb] for lb in lbs},
                                                         search_names, sc))
                search_keys.append({"model_a": a.key, "layer_a": la, "model_b": b.key})
    results = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator")(jobs)
    rows, concept_rows = [], []
    for base, (r, c) in tqdm(zip(keys, results), total=len(jobs), desc="compare", unit="layer pair", disable=None):
        rows += [{**base, **x} for x in r]
        concept_rows += [{**base, **x} for x in c]
    scores = pd.DataFrame(rows)
    searched = Parallel(n_jobs=min(workers, max(len(search_jobs), 1)))(search_jobs) if search_jobs else []
    search_df = pd.DataFrame([{**k, **x} for k, r in zip(search_keys, searched) for x in r],
                             columns=["model_a", "layer_a", "model_b", "metric", "best_layer_b", "score", "calibrated",
                                      "p_value", "tau", "n_permutations", "alpha", "n_layers_b", "n_units",
                                      "higher_is_similar"])
    best_all, depth_all = [], []
    for a, b in model_pairs(cfg):
        g = scores[(scores.model_a == a.key) & (scores.model_b == b.key)]
        best = best_layers(g, ctx.n_layers(a), ctx.n_layers(b)).assign(model_a=a.key, model_b=b.key)
        best_all.append(best)
        depth_all.append(depth_agreement(best, seed=sc.seed).assign(model_a=a.key, model_b=b.key))
    best_df, depth_df = pd.concat(best_all), pd.concat(depth_all)
    write_parquet(scores, out / "scores.parquet")
    write_parquet(best_df, out / "best_layers.parquet")
    write_parquet(depth_df, out / "depth.parquet")
    write_parquet(search_df, out / "layer_search.parquet")
    write_parquet(pd.DataFrame(concept_rows), out / "concepts.parquet")
    write_json(out / "scores.json", {"scores": scores.to_dict(orient="records"), "best_layers": best_df.to_dict(orient="records"),
                                     "depth_agreement": depth_df.to_dict(orient="records"),
                                     "layer_search": search_df.to_dict(orient="records")})
    files = [out / f for f in ("scores.parquet", "best_layers.parquet", "depth.parquet", "layer_search.parquet",
                                  "concepts.parquet", "scores.json")]
    stage.finish(chash, files, summary=headline(scores, depth_df), n_units=int(len(units)), n_units_total=int(n_units),
                 max_pairs=sc.max_pairs, n_layer_pairs_subsampled=int(n_sub))
