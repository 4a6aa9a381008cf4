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


def run_compare(cfg: RunConfig, force: bool = False) -> dict:
    """Stage 5: similarity scores over the layer grid, best layers, depth agreement, concepts."""
    import numpy as np
    import pandas as pd

    from saematch.activations import open_layer
    from saematch.artifacts import write_json
    from saematch.configio import config_hash
    from saematch.matching.store import write_parquet
    from saematch.similarity.grid import best_layers, depth_agreement, score_space
    from saematch.similarity.semantic import concept_scores, load_concepts

    run_match(cfg)
    lay, hashes = layout(cfg), Hashes(cfg)
    out = lay.similarity()
    stage = Stage(out)
    h = config_hash(cfg.similarity, sorted(hashes.pairs(a, la, b, lb) for a, b in model_pairs(cfg)
                                           for la, lb in layer_pairs(cfg, a, b)))
    if not force and stage.is_complete(h):
        return stage.manifest()["summary"]
    stage.invalidate()
    sc = cfg.similarity
    concepts = load_concepts(sc.concepts)
    rng = np.random.default_rng(sc.seed)
    rows, concept_rows = [], []
    n_units = open_layer(lay.acts(cfg.models[0].key, cfg.models[0].layers[0]), verify=False).n_rows
    units = np.sort(rng.choice(n_units, size=min(sc.max_units, n_units), replace=False))
    from tqdm.auto import tqdm

    jobs = [(a, b, la, lb) for a, b in model_pairs(cfg) for la, lb in layer_pairs(cfg, a, b)]
    acts_cache: dict = {}

    def acts(spec, layer):
        key = (spec.key, layer)
        if key not in acts_cache:
            acts_cache[key] = open_layer(lay.acts(spec.key, layer), verify=False).take(units).numpy()
        return acts_cache[key]

    for a, b, la, lb in tqdm(jobs, desc="compare", unit="layer pair", disable=None):
        pairs = pd.read_parquet(lay.pairs(a.key, la, b.key, lb) / "pairs.parquet")
        kept = pairs[pairs["keep"]]
        if len(kept) > sc.max_pairs:
            kept = kept.sample(sc.max_pairs, random_state=sc.seed)
        base = {"model_a": a.key, "layer_a": la, "model_b": b.key, "layer_b": lb}
        dec_a, dec_b = _decoder(lay, a, la), _decoder(lay, b, lb)
        if len(kept) >= 3:
            X, Y = dec_a[kept["feature_a"].to_numpy()], dec_b[kept["feature_b"].to_numpy()]
            rows += [{**base, **r} for r in score_space(X, Y, sc.feature_metrics, sc, "features")]
        rows += [{**base, **r} for r in score_space(acts(a, la), acts(b, lb), sc.activation_metrics, sc, "activations")]
        ca = pd.read_parquet(lay.features(a.key, la) / "cards.parquet", columns=["top_words"])["top_words"]
        cb = pd.read_parquet(lay.features(b.key, lb) / "cards.parquet", columns=["top_words"])["top_words"]
        concept_rows += [{**base, **r} for r in concept_scores(pairs[pairs["keep"]], dec_a, dec_b, ca, cb, sc, concepts)]
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
