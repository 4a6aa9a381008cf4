"""The report node: a self-contained report.html that leads with the calibrated picture, and browser.html.

Order: summary (calibrated headline, how to read it, a link to the browser); floor, pair and
ceiling per layer pair and readout; best-matching layer against relative depth with CIs;
universal fractions; layer x layer grids coloured by score or calibrated score (never z);
then the permutation nulls, labelled as what they are, semantic subspaces, SAE quality and
the best held-out pairs.  Every figure has a caption saying what it shows and on how many items.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

READ_ME = ("<p>Each readout is placed beside its <b>floors</b>, measured in this run: <b>random</b>, either model's "
           "architecture with random weights (the higher of the two sides), and <b>token</b>, either model's input "
           "embeddings (token identity and nothing else) paired with the other's layer. The <b>floor</b> column is the "
           "strongest of them (named in <i>floor_kind</i>). SAE readouts also have a <b>ceiling</b>, the same model with "
           "an SAE trained from another seed; <b>calibrated</b> = (score &minus; floor) / (ceiling &minus; floor), with "
           "<i>calibrated_random</i> (beyond random weights) and <i>calibrated_token</i> (beyond token identity) beside it. "
           "Raw-activation readouts (mknn, CKA) have no measured ceiling: they are <b>floor-adjusted</b>, (s &minus; f) / "
           "(1 &minus; f), and are not comparable with the SAE readouts' calibrated scores. A readout whose ceiling does "
           "not beat its floor by {se:g} SEs is <b>uninformative</b> at that layer pair and is not headlined; one with no "
           "measured floor is not calibrated. SAEs train only on the run's train documents, features are paired and layers "
           "chosen there ({frac:.0%} of the units), and every readout is scored on test documents no fit has seen. Each "
           "interval says what it resamples (<i>resamples</i>, <i>ci_method</i>): test documents for every readout on "
           "units, matched pairs for the decoder-row readouts (SVCCA, RSA), which no document enters.</p>")


def _headline(summary: dict) -> Any:
    import pandas as pd

    rows = [{"readout": name, "calibrated against": v.get("calibrated_kind"), "layer pairs": v["n_layer_pairs"],
             "uninformative": v["n_uninformative"], "mean random floor": v.get("mean_floor_random"),
             "mean token floor": v.get("mean_floor_token"), "mean score": v.get("mean_score"),
             "mean ceiling": v.get("mean_ceiling"), "mean calibrated": v.get("mean_calibrated"),
             "beyond random": v.get("mean_calibrated_random"), "beyond token": v.get("mean_calibrated_token"),
             "best pairs with floor < score < ceiling": f"{v['best_ordered']}/{v['n_best']}"}
            for name, v in summary.get("readouts", {}).items()]
    return pd.DataFrame(rows)


def build(node: Any, ctx: Any, chash: str) -> None:
    import pandas as pd

    from saematch.artifacts import Stage, atomic_path, read_json
    from saematch.graph.plan import model_pairs
    from saematch.matching.store import PairStore
    from saematch.report import html as H
    from saematch.report.browser import BrowserConfig, build_browser
    from saematch.report.plots import best_layer_curve, calibration_bars, grid

    cfg, lay, logger = ctx.cfg, ctx.layout, ctx.logger
    sim, cal_dir, out = lay.similarity(), lay.root / "calibration", node.path
    stage = Stage(out)
    stage.invalidate()
    out.mkdir(parents=True, exist_ok=True)
    cal_man = Stage(cal_dir).manifest()
    readouts = pd.read_parquet(cal_dir / "readouts.parquet")
    best = pd.read_parquet(cal_dir / "best.parquet")
    scores = pd.read_parquet(sim / "scores.parquet")
    concepts = pd.read_parquet(sim / "concepts.parquet")
    corpus_man = Stage(lay.corpus()).manifest()
    models = ", ".join(f"{m.name} (layers {list(m.layers)})" for m in cfg.models)
    figs, sections = [], []
    head = (f"<p>Models: {models}. Corpus: {cfg.corpus.source}, {corpus_man['n_docs']} documents, "
            f"{corpus_man['n_units']} aligned {corpus_man['align']} units. "
            f"<a href='browser.html'>Browse the matched pairs</a>.</p>"
            + READ_ME.format(se=cfg.calibration.uninformative_se, frac=cfg.calibration.heldout_frac)
            + H.table(_headline(cal_man["summary"])))
    shares = cal_man["summary"].get("universal_share_at_best", {})
    if shares:
        head += ("<p>Share of A's live features with a universal partner at the chosen B layer: "
                 + ", ".join(f"{k} <b>{v:.1%}</b>" for k, v in shares.items()) + ".</p>")
    sections.append(("Summary: calibrated scores", head))
    body = ""
    for name in readouts.readout.unique():
        p = calibration_bars(readouts, name, out / f"calibration_{name}.png")
        g = readouts[readouts.readout == name]
        figs.append(p)
        body += H.img(p, f"{name}: floor (grey), pair (orange) and ceiling (green) at each of {len(g)} layer pairs, "
                         f"95% intervals ({g['resamples'].iloc[0]}, {int(g['n_items'].median())} items, median); "
                         f"'u' marks uninformative "
                         f"layer pairs ({int(g['uninformative'].sum())}).")
    cols = [c for c in ["model_a", "layer_a", "model_b", "layer_b", "readout", "floor_random", "floor_token", "floor_kind",
                        "score", "score_ci_low", "score_ci_high", "ceiling", "calibrated", "calibrated_ci_low",
                        "calibrated_ci_high", "calibrated_random", "calibrated_token", "calibrated_kind", "uninformative",
                        "resamples", "ci_method", "degenerate", "n_items", "n_docs"]
            if c in readouts]
    sections.append(("Floor, pair and ceiling", body + H.table(readouts[cols])))
    body = ""
    for a, b in model_pairs(cfg):
        p = best_layer_curve(best, a.key, b.key, out / f"best_layers_{a.key}__{b.key}.png", by="readout")
        figs.append(p)
        body += H.img(p, f"For each {a.key} layer, the {b.key} layer chosen on the train documents per readout, by "
                         f"relative depth ((L+1)/blocks); labels give its held-out score and 95% interval "
                         f"({len(a.layers)} A layers x {len(b.layers)} B layers). 'test_would_pick' in the table is the "
                         f"layer the test documents would have chosen, shown, never used.")
    sections.append(("Best-matching layer against relative depth", body + H.table(best)))
    frac_path = cal_dir / "fractions.parquet"
    if frac_path.is_file():
        sections.append(("Universal fractions", "<p>A pair is universal when its held-out correlation is above the "
                         f"{cfg.calibration.universal_floor_pct:g}th percentile of the strongest floor's pairs and reaches "
                         f"{cfg.calibration.universal_twin_frac:g} of its features' seed-twin correlation "
                         f"({cfg.calibration.twin_reference}). The fraction is of <b>all live features of A</b>, each "
                         "counted once, at one B layer; the interval resamples test documents. Literature figures use "
                         "other denominators and are not directly comparable: Gurnee et al. (2024) count GPT-2 neurons "
                         "(1-5%) correlated across seeds of one model; Paulo &amp; Belrose (2025) count SAE latents shared "
                         "across SAE seeds (30-53%), which is our ceiling's question, not the cross-model one.</p>"
                         + H.table(pd.read_parquet(frac_path))))
    body = '<div class="grid">'
    for a, b in model_pairs(cfg):
        for name in readouts.readout.unique():
            g = readouts[readouts.readout == name]
            if "calibrated" in g and g["calibrated"].notna().any():
                p = grid(g, "calibrated", f"{name}: calibrated", a.key, b.key, out / f"grid_{a.key}__{b.key}_{name}.png",
                         marks=g["uninformative"].fillna(True) == False, vmin=0, vmax=1)  # noqa: E712
                figs.append(p)
                body += H.img(p, f"{name}, calibrated score per layer pair (* informative: ceiling beats floor)")
        for metric in scores.metric.unique():
            g = scores[scores.metric == metric]
            p = grid(g, "score", f"{metric}: score", a.key, b.key, out / f"grid_{a.key}__{b.key}_{metric}.png",
                     marks=g["p_value"] < 0.05)
            figs.append(p)
            body += H.img(p, f"{metric} on {g['space'].iloc[0]}, score per layer pair ({int(g['n_items'].median())} "
                             "items; * beats the permutation null, p < 0.05)")
    sections.append(("Layer x layer grids", body + "</div>"))
    summary = Stage(sim).manifest()["summary"]
    nulls = pd.DataFrame([{"metric": m, **v} for m, v in summary.items()])
    sections.append(("Permutation nulls (a test against no pairing at all, not against a random network)",
                     H.table(nulls)))
    ok = concepts[~concepts["skipped"]] if "skipped" in concepts else concepts
    cols = [c for c in ["model_a", "layer_a", "layer_b", "concept", "n_pairs", "metric", "score", "p_value", "z"] if c in concepts]
    sections.append(("Semantic subspaces", H.table(ok[cols] if len(ok) else ok) +
                     f"<p>{int(concepts.get('skipped', pd.Series(dtype=bool)).sum())} concept x layer-pair rows skipped "
                     f"(fewer than {cfg.similarity.min_concept_pairs} matched pairs).</p>"))
    evals = [{"model": m.key, "layer": L, **read_json(lay.sae(m.key, L) / "eval.json")} for m in cfg.models for L in m.layers]
    ev = pd.DataFrame(evals)[["model", "layer", "d_sae", "fvu", "l0", "dead_frac", "dense_frac", "loss_clean", "loss_spliced",
                              "loss_recovered"]]
    sections.append(("SAE quality (held-out units; dense = fires on > 10% of units)", H.table(ev)))
    for stage_name in ("transfer", "crosscoder", "interactions"):  # sections of the optional stages, when the run has them
        if getattr(cfg, stage_name).enabled:
            import importlib

            title, html_body, extra = importlib.import_module(f"saematch.{stage_name}.node").report_section(ctx, out)
            sections.append((title, html_body))
            figs += extra
    store = PairStore(lay.root)
    sections.append(("Matching (held-out correlations)", H.table(store.layer_pairs())))
    tops = store.top_pairs(limit=cfg.report.top_pairs)
    sections.append(("Best matched pairs by held-out correlation", H.table(
        tops[["layer_a", "feature_a", "layer_b", "feature_b", "correlation", "contexts_a", "contexts_b"]])))
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(H.page("saematch: " + " vs ".join(m.key for m in cfg.models), sections))
    browser = build_browser(lay.root, BrowserConfig(**{k: getattr(cfg.report, k) for k in
                                                       ("max_pairs", "n_contexts", "context_chars", "hist_bins", "page_size")}))
    for p in figs:
        logger.image(f"report/{p.stem}", p)
    for name, df in [("readouts", readouts), ("best", best), ("scores", scores), ("sae_eval", ev), ("top_pairs", tops)]:
        logger.table(f"report/{name}", df.astype(str))
    stage.finish(chash, [out / "report.html", browser, *figs])
