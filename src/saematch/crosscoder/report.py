"""The report's and the browser's crosscoder section: class fractions over all latents (dead ones a class of
their own) with their spread over seeds, FVU beside every fraction, the pair beside its floor and its
spectrum-matched floor, the dedicated variant beside the plain one, the decoder-penalty rule, Latent Scaling
and the agreement with post-hoc (Hungarian) matching."""

from __future__ import annotations

import html as _h
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from saematch.crosscoder.summary import fmt

log = logging.getLogger(__name__)

TITLE = "Crosscoder: one shared dictionary beside post-hoc matching"
INTRO = ("<p>A BatchTopK crosscoder (one latent code, an encoder and a decoder per model, each of its own d_model) "
         "is trained on the aligned units of each A layer and its best-matching B layer (held-out matched "
         "correlation), on the <b>train documents</b> of the run's split only; every statistic below is measured on "
         "its <b>test documents</b>. A latent's relative decoder norm &#8214;d_B&#8214; / (&#8214;d_A&#8214; + "
         "&#8214;d_B&#8214;) classes it: A-only below {lo:g}, B-only above {hi:g}, shared in between, and "
         "<b>dead</b> when it never fires on the test units. Fractions are of <b>all</b> latents, dead ones included "
         "(the four sum to 1), as mean &plusmn; sd [min, max] over {seeds} seed(s). Each model's input is scaled to "
         "the same variance around its mean, so a latent that explains the same share of both sits at 0.5; a "
         "decoder-norm penalty (Lindsey et al. 2024, &lambda; = {pen:g}, {how}) on top of BatchTopK drives the "
         "decoder of a model that does not need a latent to 0. The <b>floor</b> is the same crosscoder on A's "
         "random-init network; the <b>spectrum-matched floor</b> feeds it A@random's activations whitened and "
         "coloured to real A's covariance, so its latents have as much variance to buy as the pair's (a penalty "
         "zeroes decoders that buy little reconstruction, present or not). Compare fractions only beside their "
         "FVU. The <b>dedicated</b> variant (Jiralerspong &amp; Bricken 2026) reserves {share:.0%} of the latents "
         "for one model each (their other decoder fixed at 0). Latent Scaling (Minder et al. 2025) fits, per "
         "exclusive latent, how much of it the other model carries (&nu;); one with &nu; &gt; {th:g} only looks "
         "exclusive.</p>")
CLASSES = (("shared", "shared"), ("a_only", "A-only"), ("b_only", "B-only"), ("dead", "dead"))
ROLES = {"pair": "pair", "floor": "floor (A@random)", "whitened": "floor, spectrum-matched"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _entry(path: Path, man: dict) -> dict:
    return {"man": man, "path": path, "source": man["model_a"].split("@")[0], "floor": bool(man.get("control"))}


def _load(ctx: Any) -> list[dict[str, Any]]:
    """Manifests of every built crosscoder node of the plan (unbuilt ones are skipped, and logged)."""
    from saematch.artifacts import Stage
    from saematch.crosscoder.node import crosscoder_nodes

    rows = []
    for node in crosscoder_nodes(ctx):
        st = Stage(node.path)
        if not st.manifest_path.is_file():
            log.warning("crosscoder node %s has not been built; the report leaves it out", node.id)
            continue
        man = st.manifest()
        if "spread" in man:
            rows.append(_entry(Path(node.path), man))
    return rows


def load_dir(run_dir: Path) -> list[dict[str, Any]]:
    """The same entries from a run directory alone (what the browser has)."""
    out = []
    for p in sorted((Path(run_dir) / "crosscoders").glob("*/manifest.json")):
        man = json.loads(p.read_text())
        if "spread" in man:
            out.append(_entry(p.parent, man))
    return out


def _key(r: dict) -> tuple:
    m = r["man"]
    return r["source"], int(m["layer_a"]), m["model_b"]


def _lp(m: dict) -> str:
    return f"{m['model_a'].split('@')[0]} L{m['layer_a']} ~ {m['model_b']} L{m['layer_b']}"


def _rows_of(nodes: list[dict]) -> Iterable[tuple[dict, str, str, dict]]:
    """(real node, role, variant, spread) in display order: per layer pair and variant, the pair, its floor and,
    for the plain variant, its spectrum-matched floor."""
    floors = {_key(r): r for r in nodes if r["floor"]}
    for r in sorted((r for r in nodes if not r["floor"]), key=_key):
        fl = floors.get(_key(r))
        for v in sorted(r["man"]["spread"], key=lambda v: (v != "plain", v)):
            sp = r["man"]["spread"][v]
            yield r, "pair", v, sp
            if fl is not None and v in fl["man"]["spread"]:
                yield r, "floor", v, fl["man"]["spread"][v]
            if fl is not None and f"{v}-whitened" in fl["man"]["spread"]:
                yield r, "whitened", v, fl["man"]["spread"][f"{v}-whitened"]


def fractions_table(nodes: list[dict]) -> pd.DataFrame:
    """One row per (layer pair, variant, pair / floor / spectrum-matched floor): every class fraction over all
    latents with its spread over seeds, dead latents, and FVU, L0 and suspect exclusives beside them."""
    out = []
    for r, role, v, sp in _rows_of(nodes):
        row = {"layer pair": _lp(r["man"]), "variant": v, "crosscoder": ROLES[role], "seeds": sp["seeds"]["n"]}
        for key, name in CLASSES:
            row[name] = fmt(sp[f"{key}_fraction"])
        row["dead latents"] = fmt(sp["n_dead"], pct=False, digits=0)
        row["FVU A"] = fmt(sp["fvu_a"], pct=False)
        row["FVU B"] = fmt(sp["fvu_b"], pct=False)
        row["L0"] = fmt(sp["l0"], pct=False, digits=1)
        row["suspect exclusives"] = fmt(sp["n_suspect"], pct=False, digits=0)
        out.append(row)
    return pd.DataFrame(out)


def _mean(sp: dict, key: str) -> float:
    m = sp.get(key, {}).get("mean")
    return float("nan") if m is None else float(m)


def separation_table(nodes: list[dict]) -> pd.DataFrame:
    """Per layer pair and variant: the pair's exclusive and shared fractions minus each floor's (seed means), with
    both FVUs, so a separation bought by worse reconstruction shows."""
    out = []
    rows = list(_rows_of(nodes))
    for r, role, v, sp in rows:
        if role != "pair":
            continue
        row = {"layer pair": _lp(r["man"]), "variant": v, "FVU A": _mean(sp, "fvu_a"),
               "exclusive": _mean(sp, "a_only_fraction") + _mean(sp, "b_only_fraction")}
        for r2, role2, v2, sp2 in rows:
            if r2 is r and v2 == v and role2 != "pair":
                tag = "floor" if role2 == "floor" else "matched floor"
                row[f"{tag} exclusive"] = _mean(sp2, "a_only_fraction") + _mean(sp2, "b_only_fraction")
                row[f"shared - {tag} shared"] = _mean(sp, "shared_fraction") - _mean(sp2, "shared_fraction")
                row[f"{tag} FVU A"] = _mean(sp2, "fvu_a")
        out.append(row)
    return pd.DataFrame(out)


def rule_html(nodes: list[dict]) -> str:
    rule = next((r["man"]["penalty_rule"] for r in nodes if r["man"].get("penalty_rule")), None)
    lam = next((r["man"].get("penalty") for r in nodes), None)
    if rule is None:
        return f"<p>&lambda; = {lam:g} was set in the config (crosscoder.decoder_penalty), not by the rule.</p>" \
            if lam is not None else ""
    tab = pd.DataFrame(rule["table"])
    return (f"<p>&lambda; = <b>{rule['chosen']:g}</b>, chosen by a rule fixed before any real run: "
            f"{_h.escape(rule['rule'])}.</p>" + _table(tab))


def scaling_table(nodes: list[dict]) -> pd.DataFrame:
    """Latent Scaling per node, variant and exclusive class, summed over seeds."""
    out = []
    for r in sorted(nodes, key=lambda r: (_key(r), r["floor"])):
        m = r["man"]
        for v in m["spread"]:
            recs = [x["latent_scaling"] for x in m["runs"] if x["variant"] == v]
            for cls, name in (("a_only", "A-only"), ("b_only", "B-only")):
                c = [x[cls] for x in recs]
                out.append({"layer pair": _lp(m), "crosscoder": ROLES["floor"] if r["floor"] else ROLES["pair"],
                            "variant": v, "class": name, "latents (all seeds)": sum(x["n"] for x in c),
                            "suspect (nu > th)": sum(x["suspect"] for x in c),
                            "shrinkage": sum(x["shrinkage"] for x in c), "decoupling": sum(x["decoupling"] for x in c)})
    return pd.DataFrame(out)


def firing_table(nodes: list[dict]) -> pd.DataFrame:
    """Per real node, variant and class: medians (pooled over seeds) of firing entropy, co-fire, mapped cosine."""
    out = []
    for r in (r for r in nodes if not r["floor"]):
        lat = pd.read_parquet(r["path"] / "latents.parquet")
        for (v, cls), sel in lat[lat["class"] != "dead"].groupby(["variant", "class"]):
            out.append({"layer pair": _lp(r["man"]), "variant": v, "class": cls, "latents (all seeds)": len(sel),
                        "median firing entropy": sel["firing_entropy"].median(),
                        "median co-fire": sel["cofire"].median(), "median mapped cosine": sel["cos_mapped"].median()})
    return pd.DataFrame(out)


def agreement_summary_table(nodes: list[dict]) -> pd.DataFrame:
    out = []
    for r in (r for r in nodes if not r["floor"]):
        for v, sp in r["man"]["spread"].items():
            out.append({"layer pair": _lp(r["man"]), "variant": v, "seeds": sp["seeds"]["n"],
                        "shared latents whose best features are a Hungarian pair": fmt(sp["hungarian_pair_fraction"]),
                        "median corr of those A and B features": fmt(sp["median_corr_ab"], pct=False)})
    return pd.DataFrame(out)


def best_shared(agr: pd.DataFrame, latents: pd.DataFrame, n_units: int, n: int, min_units: int = 10) -> pd.DataFrame:
    """The ``n`` shared latents best matched in both SAEs (``corr_a + corr_b``) among those firing on at least
    ``min_units`` of the ``n_units`` held-out units (a latent seen on two units correlates 1.0 with anything
    seen on the same two).  ``agr`` and ``latents`` are one crosscoder's tables."""
    freq = latents.set_index("latent")["freq"]
    seen = agr["latent"].map(freq).fillna(0) * n_units >= min_units
    agr = agr[seen.to_numpy()]
    return agr.assign(both=agr["corr_a"].fillna(0) + agr["corr_b"].fillna(0)).nlargest(n, "both")


def reference_tables(r: dict, n: int) -> tuple[pd.DataFrame, dict] | None:
    """The best-matched shared latents of a real node's first plain crosscoder, and its record."""
    if not (r["path"] / "agreement.parquet").is_file():
        return None
    rec = next((x for x in r["man"]["runs"] if x["variant"] == "plain"), r["man"]["runs"][0])
    agr = pd.read_parquet(r["path"] / "agreement.parquet")
    lat = pd.read_parquet(r["path"] / "latents.parquet")
    pick = lambda df: df[(df["variant"] == rec["variant"]) & (df["seed"] == rec["seed"])]  # noqa: E731
    agr = pick(agr)
    if agr.empty:
        return None
    return best_shared(agr, pick(lat), rec["summary"]["n_heldout_units"], n), rec


def side_by_side(ctx: Any, nodes: list[dict], n: int = 6) -> pd.DataFrame:
    """The best-matched shared latents per real node (:func:`best_shared`), with the top words of both SAE
    features and of the Hungarian partner: the two views of the same latent side by side."""
    out = []
    for r in (r for r in nodes if not r["floor"]):
        got = reference_tables(r, n)
        if got is None:
            continue
        agr, rec = got
        m = r["man"]
        words_a = pd.read_parquet(ctx.layout.features(m["model_a"], m["layer_a"]) / "cards.parquet", columns=["top_words"])
        words_b = pd.read_parquet(ctx.layout.features(m["model_b"], m["layer_b"]) / "cards.parquet", columns=["top_words"])

        def words(df: pd.DataFrame, i: int) -> str:
            return ", ".join(map(str, list(df["top_words"].iloc[i])[:5])) if i >= 0 else "-"

        for row in agr.itertuples():
            out.append({"layer pair": _lp(m), "crosscoder": f"{rec['variant']} seed {rec['seed']}",
                        "latent": row.latent, "A feature": row.feature_a, "A words": words(words_a, row.feature_a),
                        "corr A": row.corr_a, "B feature": row.feature_b, "B words": words(words_b, row.feature_b),
                        "corr B": row.corr_b, "Hungarian partner": row.hungarian_b,
                        "partner words": words(words_b, row.hungarian_b), "same pair": bool(row.is_hungarian_pair)})
    return pd.DataFrame(out)


def norm_histograms(nodes: list[dict], lo: float, hi: float, path: Path) -> tuple[Path, int, int]:
    """Relative decoder norms of live plain-variant latents (all seeds) per A layer: pair against its floors."""
    plt = _plt()
    real = sorted((r for r in nodes if not r["floor"]), key=_key)
    floors = {_key(r): r for r in nodes if r["floor"]}
    fig, axes = plt.subplots(1, len(real), figsize=(3.2 * len(real) + 0.5, 2.8), squeeze=False)
    bins = np.linspace(0, 1, 41)
    n_real = n_floor = 0

    def live(r: dict, v: str) -> pd.Series:
        lat = pd.read_parquet(r["path"] / "latents.parquet")
        return lat[(lat["variant"] == v) & (lat["class"] != "dead")]["rel_norm"]

    for ax, r in zip(axes[0], real):
        x = live(r, "plain")
        n_real += len(x)
        ax.hist(x, bins=bins, color="tab:orange", alpha=0.75, label=f"pair ({len(x)})")
        f = floors.get(_key(r))
        if f is not None:
            for v, color, name in (("plain", "0.35", "floor"), ("plain-whitened", "tab:blue", "matched floor")):
                fl = live(f, v)
                n_floor += len(fl)
                if len(fl):
                    ax.hist(fl, bins=bins, histtype="step", color=color, lw=1.5, label=f"{name} ({len(fl)})")
        for b in (lo, hi):
            ax.axvline(b, ls="--", color="0.6", lw=0.8)
        ax.set_title(_lp(r["man"]), fontsize=9)
        ax.set_xlabel("||d_B|| / (||d_A|| + ||d_B||)", fontsize=8)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("live latents, all seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, n_real, n_floor


def _table(df: pd.DataFrame) -> str:
    from saematch.report import html as H

    return H.table(df)


def _intro(nodes: list[dict], cfg: Any) -> str:
    lam = next((r["man"].get("penalty") for r in nodes), None)
    rule = any(r["man"].get("penalty_rule") for r in nodes) or cfg.decoder_penalty == "rule"
    return INTRO.format(lo=cfg.shared_low, hi=cfg.shared_high, th=cfg.scaling_threshold, seeds=cfg.seeds,
                        pen=float("nan") if lam is None else lam, share=cfg.dedicated_share,
                        how="chosen by the rule below" if rule else "set in the config")


def section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """(title, HTML, figures) of the crosscoder section; figures are written under ``out``."""
    from saematch.report import html as H

    cfg = ctx.cfg.crosscoder
    nodes = _load(ctx)
    intro = _intro(nodes, cfg)
    if not any(not r["floor"] for r in nodes):
        return TITLE, intro + "<p><em>No crosscoder has been built yet (saematch crosscoder CONFIG).</em></p>", []
    fig, n_real, n_floor = norm_histograms(nodes, cfg.shared_low, cfg.shared_high, out / "crosscoder_rel_norms.png")
    floor_note = "" if any(r["floor"] for r in nodes) else \
        "<p>No random-init floor: the random-init control is off or on model B (controls.random_init, random_model).</p>"
    body = (intro + "<h3>Class fractions of all latents, pair beside its floors, over seeds</h3>"
            + _table(fractions_table(nodes)) + floor_note
            + "<h3>Separation from the floors (seed means), with reconstruction beside it</h3>"
            + _table(separation_table(nodes))
            + "<h3>The decoder penalty</h3>" + rule_html(nodes)
            + H.img(fig, f"Relative decoder norm of the live latents of the plain crosscoders (all seeds; {n_real} "
                         f"latents), pair (orange) against the random-init floor (grey) and the spectrum-matched "
                         f"floor (blue; {n_floor} floor latents in all); dashed lines mark the class boundaries "
                         f"{cfg.shared_low:g} and {cfg.shared_high:g}.")
            + "<h3>Latent Scaling: exclusive latents that only look exclusive</h3>" + _table(scaling_table(nodes))
            + "<h3>Firing across models (USAE's statistics), medians per class</h3>" + _table(firing_table(nodes))
            + "<h3>Agreement with post-hoc matching (shared latents vs the Hungarian pairs of the separate SAEs)</h3>"
            + "<p>For each shared latent: its best-correlated feature in SAE A and in SAE B on the test units, and "
              "whether those two are a Hungarian pair (spread over seeds).</p>" + _table(agreement_summary_table(nodes))
            + "<h4>Best-matched shared latents, both views side by side</h4>" + _table(side_by_side(ctx, nodes)))
    return TITLE, body, [fig]


def browser_section(run_dir: str | Path, n_latents: int = 8) -> str:
    """The browser's static crosscoder section ('' when no crosscoder is built): the fractions table with spreads
    and FVU, and the best-matched shared latents linked to the pair and feature views."""
    from saematch.artifacts import RunLayout

    root = Path(run_dir)
    nodes = load_dir(root)
    if not any(not r["floor"] for r in nodes):
        return ""
    sides = []
    for r in (r for r in nodes if not r["floor"]):
        got = reference_tables(r, n_latents)
        if got is None:
            continue
        agr, rec = got
        m = r["man"]
        lp = f"{m['model_a']}_L{m['layer_a']:02d}__{m['model_b']}_L{m['layer_b']:02d}"
        words = {}
        for key, model, layer in (("a", m["model_a"], m["layer_a"]), ("b", m["model_b"], m["layer_b"])):
            cards = RunLayout(root).features(model, layer) / "cards.parquet"
            words[key] = pd.read_parquet(cards, columns=["top_words"])["top_words"] if cards.is_file() else None

        def feat(key: str, model: str, layer: int, i: int) -> str:
            if i < 0:
                return "–"
            top = ", ".join(map(str, list(words[key].iloc[i])[:4])) if words[key] is not None else ""
            return f'<a href="#feat/{_h.escape(model)}/{layer}/{i}">#{i}</a> <span class="muted">{_h.escape(top)}</span>'

        body = "".join(
            f"<tr><td>{x.latent}</td><td>{feat('a', m['model_a'], m['layer_a'], x.feature_a)}</td>"
            f"<td class='num'>{x.corr_a:.2f}</td><td>{feat('b', m['model_b'], m['layer_b'], x.feature_b)}</td>"
            f"<td class='num'>{x.corr_b:.2f}</td><td>{feat('b', m['model_b'], m['layer_b'], x.hungarian_b)}</td>"
            + (f"<td><a href=\"#pair/{_h.escape(lp)}/{x.feature_a}/{x.feature_b}\">yes</a></td>" if x.is_hungarian_pair
               else "<td>no</td>") + f"<td class='num'>{x.jaccard_ab:.2f}</td></tr>" for x in agr.itertuples())
        sides.append(f"<h3>{_h.escape(_lp(m))} ({_h.escape(rec['variant'])}, seed {rec['seed']})</h3><table><tr>"
                     "<th>latent</th><th>best SAE-A feature</th><th>corr</th><th>best SAE-B feature</th><th>corr</th>"
                     "<th>Hungarian partner of the A feature</th><th>same pair</th><th>Jaccard A-B top units</th></tr>"
                     + body + "</table>")
    return ('<section id="crosscoder"><h1>Crosscoder beside post-hoc matching</h1><p class="muted">One shared '
            "dictionary per A layer and its best-matching B layer, trained on the train documents and read on the "
            "test documents; classes by relative decoder norm (see report.html). Fractions of all latents, dead "
            "ones included, as mean ± sd [min, max] over seeds, with FVU beside them; the floor is the same "
            "crosscoder on A's random-init network, the spectrum-matched floor the same with real A's covariance."
            "</p>" + _table(fractions_table(nodes))
            + "<h2>Best-matched shared latents and the Hungarian pairs of the separate SAEs</h2>"
            + "".join(sides) + "</section>")
