"""Layer x layer heatmaps (seed paper, Fig. 2): each metric's score and each readout's calibrated score."""

from pathlib import Path

import numpy as np
from _common import args, plt

import saematch


def draw(df, value, title, path):
    p = plt()
    la, lb = sorted(df.layer_a.unique()), sorted(df.layer_b.unique())
    M = np.full((len(la), len(lb)), np.nan)
    for r in df.itertuples():
        M[la.index(r.layer_a), lb.index(r.layer_b)] = getattr(r, value)
    fig, ax = p.subplots(figsize=(1.4 + 0.7 * len(lb), 1.0 + 0.55 * len(la)))
    im = ax.imshow(M, cmap="magma", aspect="auto")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_xticks(range(len(lb)), lb)
    ax.set_yticks(range(len(la)), la)
    ax.set_xlabel(f"{df.model_b.iloc[0]} layer")
    ax.set_ylabel(f"{df.model_a.iloc[0]} layer")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def main() -> None:
    a = args(__doc__)
    store = saematch.RunStore(a.run_dir)
    out = Path(a.out)
    for metric, g in store.scores().groupby("metric"):
        draw(g, "score", f"{metric} (score)", out / f"heatmap_{metric}.png")
    if "readouts" in store.views:
        for readout, g in store.table("readouts").groupby("readout"):
            draw(g, "calibrated", f"{readout} (calibrated: 0 floor, 1 ceiling)", out / f"heatmap_calibrated_{readout}.png")
    print(f"heatmaps in {out}")


if __name__ == "__main__":
    main()
