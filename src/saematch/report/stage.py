"""The report node: heatmaps, best-layer curves and a self-contained report.html."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def build(node: Any, ctx: Any, chash: str) -> None:
    import pandas as pd

    from saematch.artifacts import Stage, atomic_path, read_json
    from saematch.graph.plan import model_pairs
    from saematch.matching.store import PairStore
    from saematch.report import html as H
    from saematch.report.plots import best_layer_curve, heatmap

    cfg, lay, logger = ctx.cfg, ctx.layout, ctx.logger
    sim, out = lay.similarity(), node.path
    stage = Stage(out)
    stage.invalidate()
    out.mkdir(parents=True, exist_ok=True)
    summary = Stage(sim).manifest()["summary"]
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
            figs.append(heatmap(scores, metric, a.key, b.key, out / f"heatmap_{a.key}__{b.key}_{metric}.png"))
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
    stage.finish(chash, [out / "report.html", *figs])
