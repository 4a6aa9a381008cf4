"""The transfer tables of a run, as DataFrames, and the report's transfer section.

:func:`load_tables` concatenates every built transfer node's tables (only the
files its manifest lists, so nothing stale or torn is read):

* ``maps``: direction, map, held-out r2/cosine (+ ridge's random-init floor), alpha;
* ``sae``: B's SAE on mapped A, one row per A -> B map;
* ``sae_features``: per B feature, its correlation through the steer map (and the floor's);
* ``steering``: kind, concept, scale, native/mapped/random effects, success, ratio;
* ``probes``: task, map, probe accuracies (A's probe on mapped B, B's own, chance).

Every table carries ``model_a, layer_a, model_b, layer_b``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TABLES = ("maps", "sae", "sae_features", "steering", "probes")
PAIR = ["model_a", "layer_a", "model_b", "layer_b"]


def node_dirs(run_dir: str | Path) -> list[Path]:
    """Transfer node directories under ``run_dir`` (built or not)."""
    root = Path(run_dir) / "transfer"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_tables(run_dir: str | Path, dirs: Optional[Iterable[Path]] = None) -> dict[str, pd.DataFrame]:
    """Table name -> every built node's rows concatenated (empty DataFrame when none has it).

    ``dirs``: the node directories to read (default: every one under ``run_dir/transfer``);
    a node without a manifest, or a file its manifest does not list, is skipped.
    """
    from saematch.artifacts import Stage

    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for d in (node_dirs(run_dir) if dirs is None else dirs):
        st = Stage(d)
        if not st.manifest_path.is_file():
            continue
        listed = {rec["file"] for rec in st.manifest()["files"]}
        for name in TABLES:
            if f"{name}.parquet" in listed:
                parts[name].append(pd.read_parquet(Path(d) / f"{name}.parquet"))
    return {name: pd.concat(dfs, ignore_index=True) if dfs else pd.DataFrame() for name, dfs in parts.items()}


def pair_label(df: pd.DataFrame) -> pd.Series:
    return pd.Series([f"{a} L{la} -> {b} L{lb}" for a, la, b, lb in zip(df.model_a, df.layer_a, df.model_b, df.layer_b)],
                     index=df.index)


def maps_table(maps: pd.DataFrame) -> pd.DataFrame:
    """One row per layer pair and direction: held-out R^2 and cosine of every map, ridge's alpha and floor."""
    if maps.empty:
        return maps
    wide = maps.pivot_table(index=PAIR + ["direction"], columns="map", values=["r2", "cosine"], aggfunc="first")
    wide.columns = [f"{v}_{m}" for v, m in wide.columns]
    ridge = maps[maps["map"] == "ridge"].set_index(PAIR + ["direction"])
    for col in ("r2_floor", "alpha_rel"):
        if col in ridge:
            wide[f"ridge_{col}"] = ridge[col]
    return wide.reset_index()


def steering_summary(steer: pd.DataFrame) -> pd.DataFrame:
    """Per kind, concept and scale, over layer pairs: mean effects, success, per-prompt success rate, ratio."""
    if steer.empty:
        return steer
    g = steer.groupby(["kind", "concept", "scale"], sort=True)
    out = g.agg(effect_native=("effect_native", "mean"), effect_mapped=("effect_mapped", "mean"),
                effect_random=("effect_random", "mean"), success=("success", "mean"),
                success_rate=("success_rate", "mean"), cos_mapped_native=("cos_mapped_native", "mean"),
                n_layer_pairs=("layer_a", "size"))
    out["ratio"] = out["effect_mapped"] / out["effect_native"].where(out["effect_native"] != 0)
    return out.reset_index()


def probe_cells(probes: pd.DataFrame, map_kind: str = "ridge", balanced: bool = False) -> pd.DataFrame:
    """Tasks x layer pairs; each cell 'A's probe on mapped B / B's own probe / chance'."""
    if probes.empty:
        return probes
    p = probes[probes["map"] == map_kind].copy()
    p["pair"] = pair_label(p)
    pre = "bacc" if balanced else "acc"
    chance = 0.5 if balanced else p["chance"]
    p["cell"] = [f"{t:.3f} / {b:.3f} / {c:.3f}" for t, b, c in
                 zip(p[f"{pre}_transfer"], p[f"{pre}_b"], np.broadcast_to(chance, len(p)))]
    return p.pivot_table(index="task", columns="pair", values="cell", aggfunc="first").reset_index()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_maps(maps: pd.DataFrame, path: Path) -> Path:
    """Held-out R^2 against A's layer: one line per map and direction, ridge's floor dotted."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = {kind: f"C{i}" for i, kind in enumerate(sorted(maps["map"].unique()))}
    for (kind, direction), g in maps.groupby(["map", "direction"]):
        g = g.sort_values("layer_a")
        ls = "-" if direction == "a2b" else "--"
        ax.plot(g.layer_a, g.r2, marker="o", ls=ls, color=colours[kind], label=f"{kind} {direction}")
        if kind == "ridge" and g["r2_floor"].notna().any():
            ax.plot(g.layer_a, g.r2_floor, ls=ls, lw=1, color="grey", label=f"ridge {direction}, random-init floor")
    pairs = maps.drop_duplicates("layer_a").sort_values("layer_a")
    ax.set_xticks(pairs.layer_a, [f"{la}->{lb}" for la, lb in zip(pairs.layer_a, pairs.layer_b)])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(f"{maps.model_a.iloc[0]} layer -> its best-matching {maps.model_b.iloc[0]} layer")
    ax.set_ylabel("held-out R^2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_steering(steer: pd.DataFrame, path: Path) -> Path:
    """Effect against scale, one panel per vector kind: native, mapped and random (mean +- SD over rows)."""
    plt = _plt()
    kinds = sorted(steer.kind.unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        g = steer[steer.kind == kind].groupby("scale")
        for col, label, colour in (("effect_native", "native (B's own)", "C0"), ("effect_mapped", "mapped from A", "C1"),
                                   ("effect_random", "random, equal norm", "grey")):
            m, s = g[col].mean(), g[col].std().fillna(0)
            ax.plot(m.index, m.values, marker="o", color=colour, label=label)
            ax.fill_between(m.index, m - s, m + s, color=colour, alpha=0.15)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("scale (x B's mean residual norm)")
    axes[0][0].set_ylabel("change in log-mass of concept tokens")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _node_info(dirs: list[Path]) -> pd.DataFrame:
    from saematch.artifacts import Stage

    rows = []
    for d in dirs:
        st = Stage(d)
        if st.manifest_path.is_file():
            m = st.manifest()
            res = json.loads((d / "result.json").read_text())
            floor = m.get("floor")
            rows.append({"model_a": res["model_a"], "layer_a": res["layer_a"], "model_b": res["model_b"],
                         "layer_b": m["layer_b"], "matched_corr": m["best_score"], "n_train": m["n_train"],
                         "n_test": m["n_test"], "n_prompts": m.get("n_prompts"),
                         "floor": f"{floor[1]} L{floor[2]}" if floor else "none"})
    return pd.DataFrame(rows)


def report_section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """(title, HTML, figures): the maps' R^2, SAE transfer, steering table and plot, probe matrix."""
    from saematch.graph.plan import build_plan
    from saematch.report import html as H

    dirs = [n.path for n in build_plan(ctx.cfg).stage("transfer")]
    t = load_tables(ctx.layout.root, dirs)
    info = _node_info(dirs)
    figs: list[Path] = []
    body = ("<p>Each A layer is paired with its best-matching B layer (held-out matched correlation). Maps and "
            "probes are fitted on the units that paired the features and scored on the held-out units; the floor is "
            "the random-init control in A's place.</p>" + H.table(info))
    if len(info) < len(dirs):
        body += f"<p><em>{len(dirs) - len(info)} of {len(dirs)} transfer nodes are not built.</em></p>"
    maps = t["maps"]
    if not maps.empty:
        body += "<h3>Maps (held-out R^2 and cosine)</h3>" + H.table(maps_table(maps))
        n_test = int(info["n_test"].median()) if len(info) else 0
        for (ma, mb), g in maps.groupby(["model_a", "model_b"]):
            p = plot_maps(g, Path(out) / f"transfer_maps_{ma}__{mb}.png")
            figs.append(p)
            body += H.img(p, f"Held-out R^2 of every map, {ma} <-> {mb}, per {ma} layer at its best-matching {mb} layer "
                             f"({g.layer_a.nunique()} layer pairs, ~{n_test} test units each); solid A -> B, dashed B -> A; "
                             "grey: ridge with the random-init control in A's place (the floor)")
    sae = t["sae"]
    if not sae.empty:
        cols = [c for c in PAIR + ["map", "fvu_native", "fvu_mapped", "fvu_map", "l0_native", "l0_mapped", "n_alive",
                                   "median_corr", "median_corr_floor", "floor", "frac_above_floor"] if c in sae]
        body += ("<h3>SAE transfer (B's SAE on A mapped into B, against B's activations)</h3>" + H.table(sae[cols])
                 + "<p>frac_above_floor: alive B features whose activation on mapped A correlates with their own above "
                   "the floor (a high percentile of the same correlation through the random-init control).</p>")
    steer = t["steering"]
    if not steer.empty:
        body += ("<h3>Steering transfer</h3><p>Change in the log-probability mass of a concept's tokens in B's "
                 "next-token distribution on held-out prompts, mean over layer pairs. success: share of layer pairs "
                 "where the mapped vector beats every random vector of equal norm; success_rate: share of prompts where "
                 "it beats the mean random effect; ratio: mapped / native effect.</p>"
                 + H.table(steering_summary(steer)))
        p = plot_steering(steer, Path(out) / "transfer_steering.png")
        figs.append(p)
        body += H.img(p, f"Steering effect against scale for native, mapped and random vectors (mean +- SD over "
                         f"{steer.concept.nunique()} concepts x {steer.layer_a.nunique()} layer pairs, "
                         f"{int(steer.n_prompts.max())} held-out prompts each)")
    probes = t["probes"]
    if not probes.empty:
        body += ("<h3>Probe transfer (tasks x layer pairs)</h3><p>Accuracy of A's probe on B's held-out activations "
                 "mapped into A (ridge) / B's own probe / chance (majority class):</p>" + H.table(probe_cells(probes))
                 + "<p>Balanced accuracy (chance 0.5):</p>" + H.table(probe_cells(probes, balanced=True)))
    if not any(len(v) for v in t.values()):
        body += "<p><em>no transfer node is built yet</em></p>"
    return "Transfer across models: maps, SAE, steering and probes", body, figs
