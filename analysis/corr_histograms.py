"""Held-out matched-correlation histograms per layer pair (seed paper, Fig. 4)."""

import math
from pathlib import Path

import numpy as np
from _common import args, plt

import saematch


def main() -> None:
    a = args(__doc__)
    pairs = saematch.RunStore(a.run_dir).pairs()
    groups = list(pairs.groupby(["layer_a", "layer_b"]))
    cols = int(math.ceil(math.sqrt(len(groups))))
    rows = int(math.ceil(len(groups) / cols))
    p = plt()
    fig, axes = p.subplots(rows, cols, figsize=(2.2 * cols, 1.8 * rows), squeeze=False, sharex=True)
    for ax, ((la, lb), g) in zip(axes.ravel(), groups):
        v = g["correlation"].to_numpy(float)
        ax.hist(v[np.isfinite(v)], bins=30, range=(-0.2, 1.0), color="#d95f02")
        ax.set_title(f"{la} / {lb} (n={len(g)})", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(groups):]:
        ax.axis("off")
    fig.supxlabel("held-out correlation of matched pairs", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(a.out) / "corr_histograms.png", dpi=100)
    print(f"histograms in {a.out}")


if __name__ == "__main__":
    main()
