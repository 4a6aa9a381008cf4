"""How much wider the document-level intervals of matched correlation are than item-level (pair) resampling.

For every layer pair: the run's interval (test documents, BCa) beside a percentile bootstrap that resamples
matched pairs one at a time, which measures how features differ from each other, not how the result would move
on other text.  Writes ci_width.csv and prints the table with the median width ratio.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from _common import args

import saematch


def item_interval(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    rng = np.random.default_rng(seed)
    reps = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return tuple(np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]))


def main() -> None:
    a = args(__doc__)
    store = saematch.RunStore(a.run_dir)
    readouts = store.table("readouts")
    mc = readouts[readouts.readout == "matched-corr"]
    pairs = store.pairs()
    rows = []
    for r in mc.itertuples():
        g = pairs[(pairs.layer_a == r.layer_a) & (pairs.layer_b == r.layer_b)]
        lo, hi = item_interval(g["correlation"].to_numpy(np.float64), int(r.n_boot), 0)
        rows.append({"layer_a": r.layer_a, "layer_b": r.layer_b, "score": r.score, "doc_ci_low": r.score_ci_low,
                     "doc_ci_high": r.score_ci_high, "item_ci_low": lo, "item_ci_high": hi, "n_docs": r.n_docs,
                     "n_pairs": r.n_items, "width_ratio": (r.score_ci_high - r.score_ci_low) / (hi - lo)})
    out = pd.DataFrame(rows)
    out.to_csv(Path(a.out) / "ci_width.csv", index=False)
    print(out.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"median width ratio, documents / items: {out['width_ratio'].median():.2f}")


if __name__ == "__main__":
    main()
