"""Best-matching layer against relative depth (seed paper, Fig. 3), per metric and per calibrated readout."""

from pathlib import Path

from _common import args, plt

import saematch


def main() -> None:
    a = args(__doc__)
    store = saematch.RunStore(a.run_dir)
    tables = [("metric", store.best_layers())]
    if "calibrated_best" in store.views:
        tables.append(("readout", store.table("calibrated_best")))
    p = plt()
    fig, axes = p.subplots(1, len(tables), figsize=(5 * len(tables), 4), squeeze=False)
    for ax, (by, best) in zip(axes[0], tables):
        for name, g in best.groupby(by):
            g = g.sort_values("depth_a")
            ax.plot(g.depth_a, g.depth_b, marker="o", label=name)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="same relative depth")
        ax.set_xlabel(f"{best.model_a.iloc[0]} relative depth")
        ax.set_ylabel(f"best {best.model_b.iloc[0]} relative depth")
        ax.set_title("by " + by, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(Path(a.out) / "best_layers.png", dpi=100)
    print(f"best layers in {a.out}")


if __name__ == "__main__":
    main()
