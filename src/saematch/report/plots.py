"""Heatmaps and curves as PNG files (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(values: pd.DataFrame, column: str, label: str, model_a: str, model_b: str, path: Path,
         marks: pd.Series | None = None, vmin: float | None = None, vmax: float | None = None) -> Path:
    """Layer A x layer B grid coloured by ``column`` (a score or a calibrated score, never z), annotated
    with its value; ``marks`` (bool per row) puts a * on cells, e.g. where the permutation null rejects."""
    plt = _plt()
    g = values[(values.model_a == model_a) & (values.model_b == model_b)]
    la, lb = sorted(g.layer_a.unique()), sorted(g.layer_b.unique())
    S = np.full((len(la), len(lb)), np.nan)
    M = np.zeros_like(S, dtype=bool)
    for idx, r in g.iterrows():
        i, j = la.index(r.layer_a), lb.index(r.layer_b)
        S[i, j] = r[column]
        M[i, j] = bool(marks.loc[idx]) if marks is not None else False
    fig, ax = plt.subplots(figsize=(1.4 + 0.75 * len(lb), 1.0 + 0.6 * len(la)))
    im = ax.imshow(S, cmap="magma", aspect="auto", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label=label)
    for i in range(len(la)):
        for j in range(len(lb)):
            if np.isfinite(S[i, j]):
                ax.text(j, i, f"{S[i, j]:.2f}{'*' if M[i, j] else ''}", ha="center", va="center", color="c", fontsize=7)
    ax.set_xticks(range(len(lb)), lb)
    ax.set_yticks(range(len(la)), la)
    ax.set_xlabel(f"{model_b} layer")
    ax.set_ylabel(f"{model_a} layer")
    ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibration_bars(readouts: pd.DataFrame, readout: str, path: Path) -> Path:
    """Floor, pair and ceiling side by side for every layer pair of one readout, with bootstrap CIs."""
    plt = _plt()
    g = readouts[readouts.readout == readout].reset_index(drop=True)
    x = np.arange(len(g))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(g) + 1.5), 3.2))
    for off, col, colour, name in ((-0.27, "floor", "#999999", "floor"), (0.0, "score", "#d95f02", "pair"),
                                   (0.27, "ceiling", "#1b9e77", "ceiling")):
        if col not in g:
            continue
        lo = (g[col] - g.get(f"{col}_ci_low", g[col])).clip(lower=0).fillna(0)
        hi = (g.get(f"{col}_ci_high", g[col]) - g[col]).clip(lower=0).fillna(0)
        ax.bar(x + off, g[col], width=0.27, color=colour, label=name, yerr=[lo, hi], capsize=1.5, error_kw={"lw": 0.6})
    if "uninformative" in g:
        for i in np.flatnonzero(g["uninformative"].fillna(True).to_numpy(bool)):
            ax.text(x[i], ax.get_ylim()[1] * 0.95, "u", ha="center", fontsize=7, color="k")
    ax.set_xticks(x, [f"{a}/{b}" for a, b in zip(g.layer_a, g.layer_b)], rotation=90, fontsize=6)
    ax.set_xlabel("layer pair (A/B)")
    ax.set_ylabel(readout)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_layer_curve(best: pd.DataFrame, model_a: str, model_b: str, path: Path, by: str = "metric") -> Path:
    """Relative depth of the best-matching B layer against A's relative depth, per metric (or readout);
    the marker label gives the best layer's score and its CI where the table has one."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    g = best[(best.model_a == model_a) & (best.model_b == model_b)]
    for metric, m in g.groupby(by):
        m = m.sort_values("depth_a")
        ax.plot(m.depth_a, m.depth_b, marker="o", label=metric)
        if "score_ci_low" in m:
            for r in m.itertuples():
                ax.annotate(f"{r.score:.2f} [{r.score_ci_low:.2f},{r.score_ci_high:.2f}]", (r.depth_a, r.depth_b),
                            fontsize=5, xytext=(3, -8), textcoords="offset points")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="same relative depth")
    ax.set_xlabel(f"{model_a} relative depth")
    ax.set_ylabel(f"best {model_b} relative depth")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
