"""Match the features of one layer pair and build the pair table."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saematch.config import MatchConfig
from saematch.errors import SaematchError
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
    n_train: int = 0
    n_test: int = 0
    mean_corr_train: float = float("nan")


def _exclude(X: sp.csr_matrix, drop: Optional[np.ndarray]) -> sp.csr_matrix:
    """Zero the columns of excluded features (so they never fire and are never paired)."""
    if drop is None or not np.any(drop):
        return X
    drop = np.asarray(drop, bool)
    if drop.shape != (X.shape[1],):
        raise SaematchError(f"an exclusion mask needs one entry per feature ({X.shape[1]}), got {drop.shape}")
    return (X @ sp.diags((~drop).astype(X.dtype))).tocsr()


def assign(XA: sp.csr_matrix, XB: sp.csr_matrix, cfg: MatchConfig) -> Assignment:
    """Pair the features of A and B with the configured (registered) method."""
    return cfg.assign(XA, XB)


def match_pair(
    XA: sp.csr_matrix, XB: sp.csr_matrix, cards_a: pd.DataFrame, cards_b: pd.DataFrame, cfg: MatchConfig,
    train_mask: Optional[np.ndarray] = None,
) -> tuple[pd.DataFrame, MatchInfo]:
    """Matched pairs of two layers' features as a table, with filter flags.

    With ``train_mask`` the features are paired on the train units and each pair's
    ``correlation`` is measured on the other units (held-out; ``corr_train`` keeps the
    in-sample value the assignment maximised, which selection inflates).  Without it,
    both are the in-sample correlation.  Flags (``below_min_corr``) use ``corr_train``,
    so no selection is made on the held-out units.
    """
    from saematch.calibration.heldout import heldout_match

    drop_a = cards_a["dead"].to_numpy() | (cfg.drop_dense & cards_a["dense"].to_numpy())
    drop_b = cards_b["dead"].to_numpy() | (cfg.drop_dense & cards_b["dense"].to_numpy())
    if train_mask is None:
        res = assign(_exclude(XA, drop_a), _exclude(XB, drop_b), cfg)
        order = np.argsort(-res.values, kind="stable")
        ra, cb, train = res.rows[order], res.cols[order], res.values[order]
        test, n_train, n_test = train, XA.shape[0], 0
        solver, gap, k, rounds, objective = res.solver, res.gap, res.candidates_k, res.rounds, res.objective
    else:
        held = heldout_match(XA, XB, train_mask, cfg, drop_a, drop_b)
        order = np.lexsort((-held.corr_train, -np.nan_to_num(held.corr_test, nan=-2.0)))
        ra, cb = held.feature_a[order], held.feature_b[order]
        train, test = held.corr_train[order], held.corr_test[order]
        n_train, n_test, solver, gap = held.n_train, held.n_test, held.solver, held.gap
        k, rounds, objective = getattr(cfg, "candidates_k", 0), 1, float(np.sum(np.clip(train, 0, None)))
    wa, wb = cards_a["top_words"].to_numpy(), cards_b["top_words"].to_numpy()
    punct = np.array([punctuation_only(list(wa[a])) and punctuation_only(list(wb[b])) for a, b in zip(ra, cb)], bool)
    df = pd.DataFrame({
        "model_a": cards_a["model"].iloc[0], "layer_a": int(cards_a["layer"].iloc[0]), "feature_a": ra.astype(np.int64),
        "model_b": cards_b["model"].iloc[0], "layer_b": int(cards_b["layer"].iloc[0]), "feature_b": cb.astype(np.int64),
        "correlation": test, "corr_train": train, "heldout": train_mask is not None, "rank": np.arange(1, len(ra) + 1),
        "below_min_corr": train < cfg.min_corr,
        "dense_a": cards_a["dense"].to_numpy()[ra], "dense_b": cards_b["dense"].to_numpy()[cb],
        "punctuation": punct if cfg.token_filter else np.zeros(len(ra), bool),
    })
    df["keep"] = ~(df["below_min_corr"] | df["punctuation"])
    kept = df["correlation"][df["keep"]]
    info = MatchInfo(cfg.method, solver, float(gap), int(k), int(rounds), len(df), int(df["keep"].sum()), float(objective),
                     float(kept.mean()) if len(kept) else float("nan"), int(drop_a.sum()), int(drop_b.sum()),
                     int(n_train), int(n_test), float(np.nanmean(train)) if len(train) else float("nan"))
    return df, info


def info_dict(info: MatchInfo) -> dict:
    return asdict(info)


def train_mask(ctx: Any) -> np.ndarray:
    """The units that pair features: the train documents of the run's split (``RUN/split/``), the same for every
    match node; the test documents score the pairs."""
    return ctx.split.train_mask


def build(node: Any, ctx: Any, chash: str) -> None:
    """The match node of one layer pair: pairs.parquet, with how it was solved in the manifest."""
    from saematch.artifacts import Stage
    from saematch.devices import stage_device
    from saematch.features.encode import load_csr
    from saematch.graph.plan import variant
    from saematch.matching.store import write_parquet

    a, la, b, lb = node.key
    out = node.path
    stage = Stage(out)
    stage.invalidate()
    va = variant(a)
    fa = ctx.layout.features(va.source if va.kind == "shuffle" else a, la)
    fb = ctx.layout.features(b, lb)
    XA = load_csr(fa)
    cards_a = pd.read_parquet(fa / "cards.parquet")
    if va.kind == "shuffle":  # the floor that needs no model: A's units permuted, pairing and scoring as usual
        XA = XA[np.random.default_rng([ctx.cfg.controls.shuffle_seed, 7]).permutation(XA.shape[0])]
        cards_a = cards_a.assign(model=a)
    cards_b = pd.read_parquet(fb / "cards.parquet")
    mcfg = replace(ctx.cfg.matching, device=stage_device(ctx.cfg, "matching"))
    df, info = match_pair(XA, load_csr(fb), cards_a, cards_b, mcfg, train_mask(ctx))
    write_parquet(df, out / "pairs.parquet")
    stage.finish(chash, [out / "pairs.parquet"], info=info_dict(info), split_digest=ctx.split.digest)
    log.info("match %s L%d ~ %s L%d: %d pairs (%d kept), held-out mean corr %.3f (in-sample %.3f), solver %s, gap %.2g",
             a, la, b, lb, info.n_pairs, info.n_kept, info.mean_corr_kept, info.mean_corr_train, info.solver, info.gap)
