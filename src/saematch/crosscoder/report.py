"""The report's crosscoder section: shared fractions beside the random-init floor, Latent Scaling,
relative decoder norms and the agreement with post-hoc (Hungarian) matching."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TITLE = "Crosscoder: one shared dictionary beside post-hoc matching"
INTRO = ("<p>A BatchTopK crosscoder (one latent code, an encoder and a decoder per model, each of its own d_model) "
         "is trained on the aligned units of each A layer and its best-matching B layer (held-out matched "
         "correlation). A latent's relative decoder norm &#8214;d_B&#8214; / (&#8214;d_A&#8214; + &#8214;d_B&#8214;) "
         "classes it: A-only below {lo:g}, B-only above {hi:g}, shared in between. Each model's input is scaled to "
         "the same variance around its mean, so a latent that explains the same share of both sits at 0.5; a "
         "decoder-norm penalty (Lindsey et al. 2024, &lambda; = {pen:g}) on top of BatchTopK drives the decoder of a "
         "model that does not need a latent to 0 (without it, weak correlations keep both norms non-zero and "
         "every latent reads as shared, the floor's too). The <b>floor</b> is the same "
         "crosscoder with A's random-init network. Every statistic below is measured on the crosscoder's held-out "
         "units. Latent Scaling (Minder et al. 2025) fits, per exclusive latent, how much of it the other model "
         "carries (&nu;); one with &nu; &gt; {th:g} only looks exclusive (<i>shrinkage</i>: the share sits in the "
         "other model's error; <i>decoupling</i>: other latents reconstruct it). <i>Shared by scaling</i> counts the "
         "live latents of any class with &nu; &gt; {th:g}: the other model carries them.</p>")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load(ctx: Any) -> list[dict[str, Any]]:
    """Manifest and latent table of every built crosscoder node (unbuilt ones are skipped, and logged)."""
    from saematch.artifacts import Stage
    from saematch.crosscoder.node import crosscoder_nodes
    from saematch.graph.plan import variant

    rows = []
    for node in crosscoder_nodes(ctx):
        st = Stage(node.path)
        if not st.manifest_path.is_file():
            log.warning("crosscoder node %s has not been built; the report leaves it out", node.id)
            continue
        man = st.manifest()
        va = variant(node.key[0])
        rows.append({"man": man, "path": Path(node.path), "source": va.source, "floor": va.kind == "random",
                     "latents": pd.read_parquet(Path(node.path) / "latents.parquet")})
    return rows


def _key(r: dict) -> tuple:
    m = r["man"]
    return r["source"], int(m["layer_a"]), m["model_b"]


def _scaling_shared(latents: pd.DataFrame, threshold: float) -> float:
    live = latents[latents["class"] != "dead"]
    return float((live["nu"] > threshold).mean()) if len(live) else float("nan")


def fractions_table(nodes: list[dict], threshold: float) -> pd.DataFrame:
    """One row per real node: its class fractions beside the floor's (NaN where there is no floor), and the
    fraction of live latents that Latent Scaling finds in both models (``nu > threshold``)."""
    floors = {_key(r): r for r in nodes if r["floor"]}
    out = []
    for r in (r for r in nodes if not r["floor"]):
        m, s = r["man"], r["man"]["summary"]
        fr = floors.get(_key(r))
        f = fr["man"]["summary"] if fr else {}
        out.append({"model A": m["model_a"], "layer A": m["layer_a"], "model B": m["model_b"], "layer B": m["layer_b"],
                    "matched corr": m["layer_b_score"], "live latents": s["n_live"],
                    "shared": s["shared_fraction"], "floor shared": f.get("shared_fraction", np.nan),
                    "shared - floor": s["shared_fraction"] - f.get("shared_fraction", np.nan),
                    "A-only": s["a_only_fraction"], "floor A-only": f.get("a_only_fraction", np.nan),
                    "B-only": s["b_only_fraction"], "floor B-only": f.get("b_only_fraction", np.nan),
                    "shared by scaling": _scaling_shared(r["latents"], threshold),
                    "floor shared by scaling": _scaling_shared(fr["latents"], threshold) if fr else np.nan,
                    "FVU A": s["fvu_a"], "FVU B": s["fvu_b"], "floor FVU A": f.get("fvu_a", np.nan),
                    "held-out units": s["n_heldout_units"]})
    return pd.DataFrame(out)


def scaling_table(nodes: list[dict]) -> pd.DataFrame:
    """Latent Scaling diagnostics per node (real and floor) and exclusive class."""
    out = []
    for r in nodes:
        m, ls = r["man"], r["man"]["latent_scaling"]
        for cls, name in (("a_only", "A-only"), ("b_only", "B-only")):
            c = ls[cls]
            out.append({"model A": m["model_a"], "layer A": m["layer_a"], "layer B": m["layer_b"], "class": name,
                        "latents": c["n"], "suspect (nu > th)": c["suspect"], "suspect fraction": c["suspect_fraction"],
                        "shrinkage (nu_err > th)": c["shrinkage"], "decoupling (nu_rec > th)": c["decoupling"],
                        "median nu": c["median_nu"]})
    return pd.DataFrame(out)


def firing_table(nodes: list[dict]) -> pd.DataFrame:
    """Per real node and class: medians of firing entropy, co-fire and mapped decoder cosine (USAE's view)."""
    out = []
    for r in (r for r in nodes if not r["floor"]):
        m, lat = r["man"], r["latents"]
        for cls in ("shared", "a_only", "b_only"):
            sel = lat[lat["class"] == cls]
            out.append({"model A": m["model_a"], "layer A": m["layer_a"], "layer B": m["layer_b"], "class": cls,
                        "latents": len(sel), "median firing entropy": sel["firing_entropy"].median(),
                        "median co-fire": sel["cofire"].median(), "median mapped cosine": sel["cos_mapped"].median()})
    return pd.DataFrame(out)


def agreement_summary_table(nodes: list[dict]) -> pd.DataFrame:
    out = []
    for r in (r for r in nodes if not r["floor"] and r["man"].get("agreement")):
        m, a = r["man"], r["man"]["agreement"]
        out.append({"model A": m["model_a"], "layer A": m["layer_a"], "model B": m["model_b"], "layer B": m["layer_b"],
                    "shared latents": a["n_latents"], "best features found": a["n_matched_both"],
                    "same Hungarian pair": a["hungarian_pair_fraction"],
                    "corr latent-A": a["median_corr_a"], "corr latent-B": a["median_corr_b"],
                    "corr A-B features": a["median_corr_ab"], "Jaccard latent-A": a["median_jaccard_latent_a"],
                    "Jaccard latent-B": a["median_jaccard_latent_b"], "Jaccard A-B": a["median_jaccard_ab"],
                    "Jaccard A-Hungarian partner": a["median_jaccard_pair"]})
    return pd.DataFrame(out)


def best_shared(agr: pd.DataFrame, latents: pd.DataFrame, n_units: int, n: int, min_units: int = 10) -> pd.DataFrame:
    """The ``n`` shared latents best matched in both SAEs (``corr_a + corr_b``) among those firing on at least
    ``min_units`` of the ``n_units`` held-out units (a latent seen on two units correlates 1.0 with anything
    seen on the same two)."""
    freq = latents.set_index("latent")["freq"]
    seen = agr["latent"].map(freq).fillna(0) * n_units >= min_units
    agr = agr[seen.to_numpy()]
    return agr.assign(both=agr["corr_a"].fillna(0) + agr["corr_b"].fillna(0)).nlargest(n, "both")


def side_by_side(ctx: Any, nodes: list[dict], n: int = 6) -> pd.DataFrame:
    """The best-matched shared latents per real node (:func:`best_shared`), with the top words of both SAE
    features and of the Hungarian partner: the two views of the same latent side by side."""
    out = []
    for r in (r for r in nodes if not r["floor"] and (r["path"] / "agreement.parquet").is_file()):
        m = r["man"]
        agr = pd.read_parquet(r["path"] / "agreement.parquet")
        if agr.empty:
            continue
        agr = best_shared(agr, r["latents"], m["summary"]["n_heldout_units"], n)
        words_a = pd.read_parquet(ctx.layout.features(m["model_a"], m["layer_a"]) / "cards.parquet", columns=["top_words"])
        words_b = pd.read_parquet(ctx.layout.features(m["model_b"], m["layer_b"]) / "cards.parquet", columns=["top_words"])

        def words(df: pd.DataFrame, i: int) -> str:
            return ", ".join(map(str, list(df["top_words"].iloc[i])[:5])) if i >= 0 else "-"

        for row in agr.itertuples():
            out.append({"layer A": m["layer_a"], "layer B": m["layer_b"], "latent": row.latent,
                        "A feature": row.feature_a, "A words": words(words_a, row.feature_a), "corr A": row.corr_a,
                        "B feature": row.feature_b, "B words": words(words_b, row.feature_b), "corr B": row.corr_b,
                        "Hungarian partner": row.hungarian_b, "partner words": words(words_b, row.hungarian_b),
                        "same pair": bool(row.is_hungarian_pair)})
    return pd.DataFrame(out)


def norm_histograms(nodes: list[dict], lo: float, hi: float, path: Path) -> tuple[Path, int, int]:
    """Relative decoder norms of live latents per A layer: real pair against its floor."""
    plt = _plt()
    real = sorted((r for r in nodes if not r["floor"]), key=_key)
    floors = {_key(r): r for r in nodes if r["floor"]}
    fig, axes = plt.subplots(1, len(real), figsize=(3.2 * len(real) + 0.5, 2.8), squeeze=False, sharey=False)
    bins = np.linspace(0, 1, 41)
    n_real = n_floor = 0
    for ax, r in zip(axes[0], real):
        live = r["latents"][r["latents"]["class"] != "dead"]["rel_norm"]
        n_real += len(live)
        ax.hist(live, bins=bins, color="tab:orange", alpha=0.75, label=f"pair ({len(live)})")
        f = floors.get(_key(r))
        if f is not None:
            fl = f["latents"][f["latents"]["class"] != "dead"]["rel_norm"]
            n_floor += len(fl)
            ax.hist(fl, bins=bins, histtype="step", color="0.35", lw=1.5, label=f"floor ({len(fl)})")
        for x in (lo, hi):
            ax.axvline(x, ls="--", color="0.6", lw=0.8)
        ax.set_title(f"A L{r['man']['layer_a']} ~ B L{r['man']['layer_b']}", fontsize=9)
        ax.set_xlabel("||d_B|| / (||d_A|| + ||d_B||)", fontsize=8)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("latents")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, n_real, n_floor


def section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """(title, HTML, figures) of the crosscoder section; figures are written under ``out``."""
    from saematch.report import html as H

    cfg = ctx.cfg.crosscoder
    nodes = _load(ctx)
    intro = INTRO.format(lo=cfg.shared_low, hi=cfg.shared_high, th=cfg.scaling_threshold, pen=cfg.decoder_penalty)
    if not any(not r["floor"] for r in nodes):
        return TITLE, intro + "<p><em>No crosscoder has been built yet (saematch crosscoder CONFIG).</em></p>", []
    frac = fractions_table(nodes, cfg.scaling_threshold)
    fig, n_real, n_floor = norm_histograms(nodes, cfg.shared_low, cfg.shared_high, out / "crosscoder_rel_norms.png")
    n_pairs = int((~pd.Series([r["floor"] for r in nodes])).sum())
    floor_note = "" if frac["floor shared"].notna().any() else \
        "<p>No random-init floor: the random-init control is off or on model B (controls.random_init, random_model).</p>"
    body = (intro + "<h3>Shared fraction beside its floor (fractions of live latents)</h3>" + H.table(frac) + floor_note
            + H.img(fig, f"Relative decoder norm of the live latents at each of {n_pairs} layer pairs ({n_real} latents "
                         f"in all), real pair (orange) against the random-init floor (grey outline, {n_floor} latents); "
                         f"dashed lines mark the class boundaries {cfg.shared_low:g} and {cfg.shared_high:g}.")
            + "<h3>Latent Scaling: exclusive latents that only look exclusive</h3>" + H.table(scaling_table(nodes))
            + "<h3>Firing across models (USAE's statistics), medians per class</h3>" + H.table(firing_table(nodes))
            + "<h3>Agreement with post-hoc matching (shared latents vs the Hungarian pairs of the separate SAEs)</h3>"
            + "<p>For each shared latent: its best-correlated feature in SAE A and in SAE B on the held-out units, "
              "whether those two are a Hungarian pair, correlations (medians) and Jaccard overlaps of their top "
              f"{cfg.top_units} units.</p>" + H.table(agreement_summary_table(nodes))
            + "<h4>Best-matched shared latents, both views side by side</h4>" + H.table(side_by_side(ctx, nodes)))
    return TITLE, body, [fig]
