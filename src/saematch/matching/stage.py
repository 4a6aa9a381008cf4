"""Match the features of one layer pair and build the pair table."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saematch.config import MatchConfig
from saematch.features.cards import punctuation_only
from saematch.matching.assign import Assignment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchInfo:
    """How one layer pair was matched (stored in its manifest).

    excluded_a/b: features left out (never fire, or dense with drop_dense).
    """

    method: str
    solver: str
    gap: float
    candidates_k: int
    rounds: int
    n_pairs: int
    n_kept: int
    objective: float
    mean_corr_kept: float
    excluded_a: int
    excluded_b: int


def _exclude(X: sp.csr_matrix, drop: np.ndarray) -> sp.csr_matrix:
    """Zero the columns of excluded features (so they never fire and drop out)."""
    if not drop.any():
        return X
    keep = sp.diags((~drop).astype(np.float32))
    return (X @ keep).tocsr()


def assign(XA: sp.csr_matrix, XB: sp.csr_matrix, cfg: MatchConfig) -> Assignment:
    """Pair the features of A and B with the configured (registered) method."""
    return cfg.assign(XA, XB)


def match_pair(
    XA: sp.csr_matrix, XB: sp.csr_matrix, cards_a: pd.DataFrame, cards_b: pd.DataFrame, cfg: MatchConfig,
) -> tuple[pd.DataFrame, MatchInfo]:
    """Matched pairs of two layers' features as a table, with filter flags."""
    drop_a = cards_a["dead"].to_numpy() | (cfg.drop_dense & cards_a["dense"].to_numpy())
    drop_b = cards_b["dead"].to_numpy() | (cfg.drop_dense & cards_b["dense"].to_numpy())
    res = assign(_exclude(XA, drop_a), _exclude(XB, drop_b), cfg)
    ra, cb = res.rows, res.cols
    order = np.argsort(-res.values, kind="stable")
    ra, cb, vals = ra[order], cb[order], res.values[order]
    wa, wb = cards_a["top_words"].to_numpy(), cards_b["top_words"].to_numpy()
    punct = np.array([punctuation_only(list(wa[a])) and punctuation_only(list(wb[b])) for a, b in zip(ra, cb)], bool)
    df = pd.DataFrame({
        "model_a": cards_a["model"].iloc[0], "layer_a": int(cards_a["layer"].iloc[0]), "feature_a": ra.astype(np.int64),
        "model_b": cards_b["model"].iloc[0], "layer_b": int(cards_b["layer"].iloc[0]), "feature_b": cb.astype(np.int64),
        "correlation": vals, "rank": np.arange(1, len(vals) + 1),
        "below_min_corr": vals < cfg.min_corr,
        "dense_a": cards_a["dense"].to_numpy()[ra], "dense_b": cards_b["dense"].to_numpy()[cb],
        "punctuation": punct if cfg.token_filter else np.zeros(len(vals), bool),
    })
    df["keep"] = ~(df["below_min_corr"] | df["punctuation"])
    kept = df["correlation"][df["keep"]]
    info = MatchInfo(cfg.method, res.solver, float(res.gap), res.candidates_k, res.rounds, len(df), int(df["keep"].sum()),
                     res.objective, float(kept.mean()) if len(kept) else float("nan"), int(drop_a.sum()), int(drop_b.sum()))
    return df, info


def info_dict(info: MatchInfo) -> dict:
    return asdict(info)


def build(node: Any, ctx: Any, chash: str) -> None:
    """The match node of one layer pair: pairs.parquet, with how it was solved in the manifest."""
    from saematch.artifacts import Stage
    from saematch.features.encode import load_csr
    from saematch.matching.store import write_parquet

    a, la, b, lb = node.key
    out = node.path
    stage = Stage(out)
    stage.invalidate()
    fa, fb = ctx.layout.features(a, la), ctx.layout.features(b, lb)
    df, info = match_pair(load_csr(fa), load_csr(fb), pd.read_parquet(fa / "cards.parquet"),
                          pd.read_parquet(fb / "cards.parquet"), ctx.cfg.matching)
    write_parquet(df, out / "pairs.parquet")
    stage.finish(chash, [out / "pairs.parquet"], info=info_dict(info))
    log.info("match %s L%d ~ %s L%d: %d pairs (%d kept), mean corr %.3f, solver %s, gap %.2g",
             a, la, b, lb, info.n_pairs, info.n_kept, info.mean_corr_kept, info.solver, info.gap)
