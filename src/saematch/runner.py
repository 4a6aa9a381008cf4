"""Stages 5-6 and the whole run: similarity over the layer grid, the report, `saematch run`."""

from __future__ import annotations

import logging
from pathlib import Path

from saematch.artifacts import Stage, check_writable
from saematch.config import ModelSpec, RunConfig
from saematch.pipeline import (Hashes, layer_pairs, layout, model_pairs, run_corpus, run_extract, run_match,
                               run_sae)

log = logging.getLogger(__name__)


def _decoder(lay, spec: ModelSpec, layer: int):
    from saematch.sae import load_sae_dir

    return load_sae_dir(lay.sae(spec.key, layer)).W_dec.detach().float().numpy()


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


def run_compare(cfg: RunConfig, force: bool = False) -> dict:
    """Stage 5: similarity scores over the layer grid, best layers, depth agreement, concepts.

    Layer pairs are scored in ``similarity.workers`` processes (joblib, one BLAS
    thread each); every job uses the same seeds, so results do not depend on it.
    """
    import os

    import numpy as np
    import pandas as pd
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from saematch.activations import open_layer
    from saematch.artifacts import write_json
    from saematch.configio import config_hash
    from saematch.matching.store import write_parquet
    from saematch.similarity.grid import best_layers, depth_agreement
    from saematch.similarity.semantic import load_concepts

    run_match(cfg)
    lay, hashes = layout(cfg), Hashes(cfg)
    out = lay.similarity()
    stage = Stage(out)
    sc = cfg.similarity
    h = config_hash({k: v for k, v in vars(sc).items() if k != "workers"},
                    sorted(hashes.pairs(a, la, b, lb) for a, b in model_pairs(cfg) for la, lb in layer_pairs(cfg, a, b)))
    if not force and stage.is_complete(h):
        return stage.manifest()["summary"]
    stage.invalidate()
    concepts = load_concepts(sc.concepts)
    rng = np.random.default_rng(sc.seed)
    n_units = open_layer(lay.acts(cfg.models[0].key, cfg.models[0].layers[0]), verify=False).n_rows
    units = np.sort(rng.choice(n_units, size=min(sc.max_units, n_units), replace=False))
    acts = {(m.key, L): open_layer(lay.acts(m.key, L), verify=False).take(units).numpy() for m in cfg.models for L in m.layers}
    dec = {(m.key, L): _decoder(lay, m, L) for m in cfg.models for L in m.layers}
    words = {(m.key, L): pd.read_parquet(lay.features(m.key, L) / "cards.parquet", columns=["top_words"])["top_words"]
             for m in cfg.models for L in m.layers}
    jobs, keys = [], []
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            pairs = pd.read_parquet(lay.pairs(a.key, la, b.key, lb) / "pairs.parquet")
            kept = pairs[pairs["keep"]]
            sub = kept.sample(sc.max_pairs, random_state=sc.seed) if len(kept) > sc.max_pairs else kept
            da, db = dec[a.key, la], dec[b.key, lb]
            X, Y = (da[sub["feature_a"].to_numpy()], db[sub["feature_b"].to_numpy()]) if len(sub) >= 3 else (None, None)
            concept_in = (kept, da, db, words[a.key, la], words[b.key, lb])
            jobs.append(delayed(score_layer_pair)(X, Y, acts[a.key, la], acts[b.key, lb], concept_in, sc, concepts))
            keys.append({"model_a": a.key, "layer_a": la, "model_b": b.key, "layer_b": lb})
    workers = sc.workers or os.cpu_count() or 1
    results = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator")(jobs)
    rows, concept_rows = [], []
    for base, (r, c) in tqdm(zip(keys, results), total=len(jobs), desc="compare", unit="layer pair", disable=None):
        rows += [{**base, **x} for x in r]
        concept_rows += [{**base, **x} for x in c]
    scores = pd.DataFrame(rows)
    best_all, depth_all = [], []
    for a, b in model_pairs(cfg):
        g = scores[(scores.model_a == a.key) & (scores.model_b == b.key)]
        na, nb = _n_layers(cfg, a), _n_layers(cfg, b)
        best = best_layers(g, na, nb).assign(model_a=a.key, model_b=b.key)
        best_all.append(best)
        depth_all.append(depth_agreement(best).assign(model_a=a.key, model_b=b.key))
    best_df, depth_df = pd.concat(best_all), pd.concat(depth_all)
    write_parquet(scores, out / "scores.parquet")
    write_parquet(best_df, out / "best_layers.parquet")
    write_parquet(depth_df, out / "depth.parquet")
    concept_df = pd.DataFrame(concept_rows)
    write_parquet(concept_df, out / "concepts.parquet")
    write_json(out / "scores.json", {"scores": scores.to_dict(orient="records"), "best_layers": best_df.to_dict(orient="records"),
                                     "depth_agreement": depth_df.to_dict(orient="records")})
    summary = headline(scores, depth_df)
    files = [out / f for f in ("scores.parquet", "best_layers.parquet", "depth.parquet", "concepts.parquet", "scores.json")]
    stage.finish(h, files, summary=summary)
    return summary


def _n_layers(cfg: RunConfig, spec: ModelSpec) -> int:
    """Blocks in the model, read from its config (no weights loaded)."""
    from saematch.adapter import n_layers_of

    return n_layers_of(spec.name, cfg.cache_path, spec.trust_remote_code, spec.revision)


def headline(scores, depth) -> dict:
    """Per metric: mean score, how many layer pairs beat their null (p < 0.05), and depth agreement."""
    out = {}
    for metric, g in scores.groupby("metric"):
        beat = g["p_value"].dropna()
        out[metric] = {"mean_score": float(g["score"].mean()), "max_score": float(g["score"].max()),
                       "n_layer_pairs": int(len(g)), "n_beat_null": int((beat < 0.05).sum()), "n_tested": int(len(beat))}
        d = depth[depth.metric == metric]
        if len(d):
            out[metric]["spearman_depth"] = float(d["spearman_depth"].iloc[0])
    return out


def run_report(cfg: RunConfig, force: bool = False, logger=None) -> Path:
    """Stage 6: heatmaps, best-layer curves and a self-contained report.html."""
    import pandas as pd

    from saematch.artifacts import atomic_path, read_json
    from saematch.logger import NullLogger
    from saematch.matching.store import PairStore
    from saematch.report import html as H
    from saematch.report.plots import best_layer_curve, heatmap

    logger = logger or NullLogger()
    summary = run_compare(cfg)
    lay = layout(cfg)
    sim, out = lay.similarity(), lay.report()
    out.mkdir(parents=True, exist_ok=True)
    scores = pd.read_parquet(sim / "scores.parquet")
    best = pd.read_parquet(sim / "best_layers.parquet")
    depth = pd.read_parquet(sim / "depth.parquet")
    concepts = pd.read_parquet(sim / "concepts.parquet")
    sections = []
    head = pd.DataFrame([{"metric": m, **v} for m, v in summary.items()])
    corpus_man = Stage(lay.corpus()).manifest()
    models = ", ".join(f"{m.name} (layers {list(m.layers)})" for m in cfg.models)
    sections.append(("Summary", f"<p>Models: {models}. Corpus: {cfg.corpus.source}, {corpus_man['n_docs']} documents, "
                                f"{corpus_man['n_units']} aligned {corpus_man['align']} units.</p>" + H.table(head)))
    figs = []
    for a, b in model_pairs(cfg):
        for metric in scores.metric.unique():
            p = heatmap(scores, metric, a.key, b.key, out / f"heatmap_{a.key}__{b.key}_{metric}.png")
            figs.append(p)
        figs.append(best_layer_curve(best, a.key, b.key, out / f"best_layers_{a.key}__{b.key}.png"))
    sections.append(("Layer x layer heatmaps", '<div class="grid">' + "".join(H.img(p, p.stem) for p in figs[:-1]) + "</div>"))
    sections.append(("Best-matching layers", H.img(figs[-1], "best layers") + H.table(depth) + H.table(best)))
    ok = concepts[~concepts["skipped"]] if "skipped" in concepts else concepts
    cols = [c for c in ["model_a", "layer_a", "layer_b", "concept", "n_pairs", "metric", "score", "p_value", "z"] if c in concepts]
    sections.append(("Semantic subspaces", H.table(ok[cols] if len(ok) else ok) +
                     f"<p>{int(concepts.get('skipped', pd.Series(dtype=bool)).sum())} concept x layer-pair rows skipped "
                     f"(fewer than {cfg.similarity.min_concept_pairs} matched pairs).</p>"))
    evals = [{"model": m.key, "layer": L, **read_json(lay.sae(m.key, L) / "eval.json")} for m in cfg.models for L in m.layers]
    ev = pd.DataFrame(evals)[["model", "layer", "fvu", "l0", "dead_frac", "dense_frac", "loss_clean", "loss_spliced", "loss_recovered"]]
    sections.append(("SAE quality (held-out units)", H.table(ev)))
    store = PairStore(lay.root)
    sections.append(("Matching", H.table(store.layer_pairs())))
    tops = store.top_pairs(limit=cfg.report.top_pairs)
    sections.append(("Top matched pairs", H.table(tops[["layer_a", "feature_a", "layer_b", "feature_b", "correlation",
                                                        "contexts_a", "contexts_b"]])))
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(H.page("saematch: " + " vs ".join(m.key for m in cfg.models), sections))
    for p in figs:
        logger.image(f"report/{p.stem}", p)
    for name, df in [("scores", scores), ("best_layers", best), ("concepts", concepts), ("sae_eval", ev), ("top_pairs", tops)]:
        logger.table(f"report/{name}", df.astype(str))
    return out / "report.html"


STAGES = ("corpus", "extract", "train", "match", "compare", "report")


def invalidate_from(cfg: RunConfig, stage: str) -> None:
    """Drop the manifests of ``stage`` and every stage after it (artifacts are then rebuilt)."""
    lay = layout(cfg)
    later = STAGES[STAGES.index(stage):]
    if "corpus" in later:
        Stage(lay.corpus()).invalidate()
    for spec in cfg.models:
        for layer in spec.layers:
            if "extract" in later:
                Stage(lay.acts(spec.key, layer)).invalidate()
            if "train" in later:
                Stage(lay.sae(spec.key, layer)).invalidate()
                Stage(lay.features(spec.key, layer)).invalidate()
    if "match" in later:
        for p in lay.pairs_root().glob("*"):
            Stage(p).invalidate()
    if "compare" in later:
        Stage(lay.similarity()).invalidate()


def run_all(cfg: RunConfig, force: str | None = None, logger=None) -> dict:
    """Every stage in order, each skipped when up to date; returns timings and headline scores."""
    import time

    if force:
        invalidate_from(cfg, force)
    check_writable(cfg.run_dir)
    steps = [("corpus", lambda: run_corpus(cfg)), ("extract", lambda: run_extract(cfg)),
             ("train", lambda: run_sae(cfg, logger=logger)), ("match", lambda: run_match(cfg)),
             ("compare", lambda: run_compare(cfg)), ("report", lambda: run_report(cfg, logger=logger))]
    times, result = {}, None
    for name, fn in steps:
        t = time.perf_counter()
        log.info("stage %s ...", name)
        result = fn()
        times[name] = time.perf_counter() - t
    return {"report": str(result), "times": times, "headline": Stage(layout(cfg).similarity()).manifest()["summary"]}
