"""The pair store: Parquet files queried with DuckDB.

``RUN/pairs/<A>_LXX__<B>_LYY/pairs.parquet`` holds one row per matched pair
(model_a, layer_a, feature_a, model_b, layer_b, feature_b, correlation, rank,
filter flags, keep); ``RUN/features/<model>/layer_LL/cards.parquet`` holds the
feature cards.  :class:`PairStore` exposes them as the DuckDB views ``pairs``
and ``features`` and returns pandas DataFrames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from saematch.artifacts import atomic_path
from saematch.errors import ArtifactError, SaematchError


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


class PairStore:
    """Query matched pairs and feature cards of a run directory."""

    def __init__(self, run_dir: str | Path):
        import duckdb

        self.root = Path(run_dir)
        pair_files = sorted(self.root.glob("pairs/*/pairs.parquet"))
        card_files = sorted(f for f in self.root.glob("features/*/*/cards.parquet") if "@" not in f.parent.parent.name)
        if not pair_files or not card_files:
            raise SaematchError(f"{self.root} has no matched pairs yet; run `saematch match` first")
        self.con = duckdb.connect()
        try:
            raw = f"read_parquet({_list(pair_files)}, union_by_name=true)"
            uni = self.root / "calibration" / "universality.parquet"
            if uni.is_file():  # held-out universality of every pair, from the calibrate node
                self.con.execute(
                    f"CREATE VIEW pairs AS SELECT p.*, u.universal, u.twin_a AS twin_corr_a, u.twin_b AS twin_corr_b, "
                    f"u.floor_percentile FROM {raw} p LEFT JOIN read_parquet({_list([uni])}) u "
                    "USING (model_a, layer_a, model_b, layer_b, feature_a, feature_b)")
                self.has_universality = True
            else:
                self.con.execute(f"CREATE VIEW pairs AS SELECT * FROM {raw}")
                self.has_universality = False
            self.con.execute(f"CREATE VIEW features AS SELECT * FROM read_parquet({_list(card_files)}, union_by_name=true)")
        except Exception as exc:
            raise ArtifactError(f"corrupt pair store under {self.root}: {str(exc).splitlines()[0]}") from None

    def sql(self, query: str, params: Optional[list[Any]] = None) -> pd.DataFrame:
        try:
            return self.con.execute(query, params or []).df()
        except Exception as exc:
            raise SaematchError(f"query failed: {str(exc).splitlines()[0]}") from None

    def layer_pairs(self) -> pd.DataFrame:
        """Per layer pair: pairs, mean held-out correlation, kept pairs (and the universal fraction when known)."""
        uni = ", avg(CASE WHEN universal THEN 1.0 ELSE 0.0 END) AS universal_frac" if self.has_universality else ""
        return self.sql("SELECT model_a, layer_a, model_b, layer_b, count(*) AS n_pairs, avg(correlation) AS mean_corr, "
                        f"sum(CASE WHEN keep THEN 1 ELSE 0 END) AS n_kept{uni} FROM pairs GROUP BY ALL ORDER BY layer_a, layer_b")

    def top_pairs(self, layer_a: Optional[int] = None, layer_b: Optional[int] = None, min_corr: float = -1.0,
                  limit: int = 20, only_kept: bool = True, universal: bool = False) -> pd.DataFrame:
        """Best pairs by held-out correlation (optionally of one layer pair, or only universal ones)
        with both features' top contexts."""
        where = ["p.correlation >= ?"]
        params: list[Any] = [min_corr]
        if universal:
            if not self.has_universality:
                raise SaematchError(f"{self.root} has no universality yet; run `saematch run` with controls on")
            where.append("p.universal")
        if layer_a is not None:
            where.append("p.layer_a = ?")
            params.append(layer_a)
        if layer_b is not None:
            where.append("p.layer_b = ?")
            params.append(layer_b)
        if only_kept:
            where.append("p.keep")
        params.append(limit)
        return self.sql(
            "SELECT p.layer_a, p.feature_a, p.layer_b, p.feature_b, p.correlation, p.rank, "
            + ("p.universal, p.twin_corr_a, p.twin_corr_b, " if self.has_universality else "") +
            "fa.freq AS freq_a, fb.freq AS freq_b, fa.contexts AS contexts_a, fb.contexts AS contexts_b "
            "FROM pairs p JOIN features fa ON fa.model = p.model_a AND fa.layer = p.layer_a AND fa.feature = p.feature_a "
            "JOIN features fb ON fb.model = p.model_b AND fb.layer = p.layer_b AND fb.feature = p.feature_b "
            f"WHERE {' AND '.join(where)} ORDER BY p.correlation DESC NULLS LAST LIMIT ?", params)

    def partner(self, model: str, layer: int, feature: int) -> pd.DataFrame:
        """The matched partners of one feature (in any layer pair), with both cards."""
        return self.sql(
            "SELECT p.*, fa.contexts AS contexts_a, fb.contexts AS contexts_b FROM pairs p "
            "JOIN features fa ON fa.model = p.model_a AND fa.layer = p.layer_a AND fa.feature = p.feature_a "
            "JOIN features fb ON fb.model = p.model_b AND fb.layer = p.layer_b AND fb.feature = p.feature_b "
            "WHERE (p.model_a = ? AND p.layer_a = ? AND p.feature_a = ?) OR (p.model_b = ? AND p.layer_b = ? AND p.feature_b = ?) "
            "ORDER BY p.correlation DESC", [model, layer, feature] * 2)

    def card(self, model: str, layer: int, feature: int) -> pd.DataFrame:
        return self.sql("SELECT * FROM features WHERE model = ? AND layer = ? AND feature = ?", [model, layer, feature])

    def search(self, word: str, limit: int = 20) -> pd.DataFrame:
        """Features whose top-activating units include ``word`` (case-insensitive)."""
        return self.sql(
            "SELECT model, layer, feature, freq, top_words, contexts FROM features "
            "WHERE list_contains(list_transform(top_words, lambda x: lower(x)), lower(?)) "
            "ORDER BY freq DESC LIMIT ?", [word, limit])


def _list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
