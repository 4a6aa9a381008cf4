"""The semantic-subspace table (seed paper, Table 1): per concept and layer pair, SVCCA and RSA with p-values."""

from pathlib import Path

from _common import args

import saematch


def main() -> None:
    a = args(__doc__)
    df = saematch.RunStore(a.run_dir).table("concepts")
    if "skipped" in df:
        df = df[~df["skipped"].astype(bool)]
    cols = [c for c in ["model_a", "layer_a", "model_b", "layer_b", "concept", "n_pairs", "metric", "score", "p_value"]
            if c in df]
    table = df[cols].sort_values(["concept", "metric", "layer_a", "layer_b"])
    out = Path(a.out)
    table.to_csv(out / "semantic_table.csv", index=False)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    (out / "semantic_table.md").write_text("\n".join(lines) + "\n")
    print(f"{len(table)} rows in {out}/semantic_table.csv and .md")


if __name__ == "__main__":
    main()
