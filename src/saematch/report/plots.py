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


def heatmap(scores: pd.DataFrame, metric: str, model_a: str, model_b: str, path: Path) -> Path:
    """Layer A x layer B grid: cells coloured by null-normalised z (or raw score), annotated with the score."""
    plt = _plt()
    g = scores[(scores.metric == metric) & (scores.model_a == model_a) & (scores.model_b == model_b)]
    la, lb = sorted(g.layer_a.unique()), sorted(g.layer_b.unique())
    S = np.full((len(la), len(lb)), np.nan)
    Z = np.full_like(S, np.nan)
    P = np.full_like(S, np.nan)
    for _, r in g.iterrows():
        i, j = la.index(r.layer_a), lb.index(r.layer_b)
        S[i, j], Z[i, j], P[i, j] = r.score, r.z, r.p_value
    has_null = np.isfinite(Z).any()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(lb), 1.0 + 0.7 * len(la)))
    im = ax.imshow(Z if has_null else S, cmap="viridis" if has_null else "magma", aspect="auto")
    fig.colorbar(im, ax=ax, label="z vs permutation null" if has_null else metric)
    for i in range(len(la)):
        for j in range(len(lb)):
            star = "*" if np.isfinite(P[i, j]) and P[i, j] < 0.05 else ""
            ax.text(j, i, f"{S[i, j]:.2f}{star}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(lb)), lb)
    ax.set_yticks(range(len(la)), la)
    ax.set_xlabel(f"{model_b} layer")
    ax.set_ylabel(f"{model_a} layer")
    ax.set_title(f"{metric}" + (" (colour: z vs null; * p<0.05)" if has_null else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_layer_curve(best: pd.DataFrame, model_a: str, model_b: str, path: Path) -> Path:
    """Relative depth of the best-matching B layer against A's relative depth, per metric."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    g = best[(best.model_a == model_a) & (best.model_b == model_b)]
    for metric, m in g.groupby("metric"):
        m = m.sort_values("depth_a")
        ax.plot(m.depth_a, m.depth_b, marker="o", label=metric)
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
