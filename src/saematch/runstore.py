"""The run-level store: every table of a run directory as DuckDB views and pandas DataFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from saematch.matching.store import PairStore, _list

# view name -> files (relative to the run directory) that hold it
TABLES = {
    "scores": "similarity/scores.parquet",
    "best_layers": "similarity/best_layers.parquet",
    "depth": "similarity/depth.parquet",
    "concepts": "similarity/concepts.parquet",
    "readouts": "calibration/readouts.parquet",
    "universality": "calibration/universality.parquet",
    "fractions": "calibration/fractions.parquet",
    "calibrated_best": "calibration/best.parquet",
    "transfer_maps": "transfer/*/maps.parquet",
    "transfer_sae": "transfer/*/sae.parquet",
    "transfer_sae_features": "transfer/*/sae_features.parquet",
    "transfer_steering": "transfer/*/steering.parquet",
    "transfer_probes": "transfer/*/probes.parquet",
    "crosscoder_latents": "crosscoders/*/latents.parquet",
    "crosscoder_agreement": "crosscoders/*/agreement.parquet",
    "interactions": "interactions/*/interactions.parquet",
}


class RunStore(PairStore):
    """Query a run: the views ``pairs`` and ``features`` (see :class:`PairStore`) and, once the
    compare stage has run, ``scores``, ``best_layers``, ``depth`` and ``concepts``; once the
    calibrate stage has run, ``readouts``, ``universality``, ``fractions`` and ``calibrated_best``; and the
    ``transfer_*`` and ``crosscoder_*`` tables and the ``interactions`` table (one row per prompt, model, baseline
    and subset S) of those stages when they are enabled."""

    def __init__(self, run_dir: str | Path):
        super().__init__(run_dir)
        self.views = ["pairs", "features"]
        for view, rel in TABLES.items():
            files = sorted(self.root.glob(rel))
            if files:
                self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_list(files)}, union_by_name=true)")
                self.views.append(view)

    def table(self, view: str, where: Optional[str] = None) -> pd.DataFrame:
        """A whole view (optionally filtered by a SQL condition) as a DataFrame."""
        from saematch.errors import SaematchError

        if view not in self.views:
            raise SaematchError(f"run {self.root} has no '{view}' table yet (it has: {', '.join(self.views)})")
        return self.sql(f"SELECT * FROM {view}" + (f" WHERE {where}" if where else ""))

    def pairs(self, where: Optional[str] = None) -> pd.DataFrame:
        return self.table("pairs", where)

    def features(self, where: Optional[str] = None) -> pd.DataFrame:
        return self.table("features", where)

    def scores(self, where: Optional[str] = None) -> pd.DataFrame:
        return self.table("scores", where)

    def best_layers(self, where: Optional[str] = None) -> pd.DataFrame:
        return self.table("best_layers", where)
