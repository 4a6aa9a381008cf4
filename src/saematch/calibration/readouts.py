"""Every readout of one layer pair placed between its floor and its ceiling.

Readouts (name, what it is measured on, floor, ceiling):

- ``matched-corr``: mean held-out correlation of the Hungarian pairs; floor: the
  random-init control's pairs (or the unit-shuffle control's); ceiling: each model
  against its own seed twin at the same layer (both sides pooled).
- ``mknn``, ``cka-linear``: raw activations of the same units; floor: the random-init
  model's activations (or A's units shuffled); ceiling: 1 by construction (a model
  against itself), stated, not computed.  Score and floor resample the same units.
- ``svcca``, ``rsa``: on the decoder rows of matched pairs (the seed paper's readouts);
  floor and ceiling from the control and twin pairs.  SVCCA states ``degenerate`` when
  it has fewer than ``min_items_per_dim`` items per kept dimension.
- ``svcca-units``: SVCCA on the matched features' activations over held-out units, with
  at most one kept direction per ``min_items_per_dim`` units: valid at the demo's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from saematch.calibration.calibrate import Resampled, calibrate_readout, item_mean, metric_readout
from saematch.calibration.config import CalibrationConfig
from saematch.calibration.svcca_units import svcca_units_readout

RAW_READOUTS = ("mknn", "cka-linear")
DECODER_READOUTS = ("svcca", "rsa")


@dataclass(frozen=True)
class Side:
    """One matching's inputs for the decoder and unit readouts: its pairs (feature_a, feature_b,
    correlation) and the decoders ``[F, d]`` and test-unit activations ``[n, F]`` of both sides."""

    pairs: pd.DataFrame
    dec_a: np.ndarray
    dec_b: np.ndarray
    acts_a: Any = None  # CSR [n, F_A] on the held-out units used for svcca-units
    acts_b: Any = None


def pooled(a: Resampled, b: Resampled) -> Resampled:
    """The mean of two readouts (both models' seed twins): the items are both readouts' items, and a
    resample of them scores each readout on the items it drew from it."""
    na = a.n_items

    def fn(idx: np.ndarray) -> float:
        ia, ib = idx[idx < na], idx[idx >= na] - na
        if len(ia) == 0 or len(ib) == 0:
            return float("nan")
        return 0.5 * (float(a.fn(ia)) + float(b.fn(ib)))

    return Resampled(fn, na + b.n_items)


def _sub(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    ok = pairs[np.isfinite(pairs["correlation"])]
    return ok.sample(n, random_state=seed) if len(ok) > n else ok


def _decoder_readout(metric: Any, side: Side, n: int, seed: int) -> tuple[Resampled, dict]:
    p = _sub(side.pairs, n, seed)
    X, Y = side.dec_a[p["feature_a"].to_numpy()], side.dec_b[p["feature_b"].to_numpy()]
    return metric_readout(metric, X, Y), dict(metric(X, Y).diagnostics)


def _unit_readout(side: Side, n: int, seed: int, cal: CalibrationConfig) -> Resampled:
    p = _sub(side.pairs, n, seed)
    A = side.acts_a[:, p["feature_a"].to_numpy()].toarray().astype(np.float64)
    B = side.acts_b[:, p["feature_b"].to_numpy()].toarray().astype(np.float64)
    return svcca_units_readout(A, B, cal.svcca_var, None, cal.min_items_per_dim)


def layer_pair_readouts(main: Side, floor: Optional[Side], twins: tuple[Optional[Side], Optional[Side]],
                        raw: tuple[np.ndarray, np.ndarray, Optional[np.ndarray]], floor_kind: str,
                        cal: CalibrationConfig, max_pairs: int, unit_dims: int) -> list[dict]:
    """Rows (one per readout) with score, floor, ceiling, calibrated, CIs and flags.

    raw: (A, B, F) activations of the sampled units, F the floor's side (random-init
    activations, or A's rows shuffled).  twins: (A vs A-twin, B vs B-twin) sides, None
    where a model has no twin (pretrained SAEs).
    """
    from saematch.similarity.base import get_metric

    rows = []
    kw = dict(n_boot=cal.n_bootstrap, seed=cal.seed, level=cal.ci_level, min_separation=cal.uninformative_se)
    have_twins = all(t is not None for t in twins)

    def emit(name: str, space: str, score: Resampled, flo: Optional[Resampled], ceil: Optional[Resampled],
             by_construction: bool = False, joint: bool = False, **extra: Any) -> None:
        if flo is None or (ceil is None and not by_construction):
            rows.append({"readout": name, "space": space, "score": score.value(), "n_items": score.n_items,
                         "floor_kind": floor_kind if flo is not None else "none", "uninformative": True,
                         "missing_control": "floor" if flo is None else "ceiling", **extra})
            return
        r = calibrate_readout(score, flo, ceil, joint=joint, **kw)
        rows.append({"readout": name, "space": space, **r.row(), "n_items": score.n_items, "floor_kind": floor_kind,
                     "missing_control": "", **extra})

    corr = lambda s: item_mean(s.pairs["correlation"].to_numpy())  # noqa: E731
    ceil = pooled(corr(twins[0]), corr(twins[1])) if have_twins else None
    emit("matched-corr", "pairs (held-out)", corr(main), corr(floor) if floor else None, ceil)
    A, B, F = raw
    for name in RAW_READOUTS:
        m = get_metric(name)
        # a unit drawn twice is its own nearest neighbour and inflates kernel similarity: each
        # replicate scores its distinct units only (a conservative CI)
        emit(name, "activations", metric_readout(m, A, B, True), None if F is None else
             metric_readout(m, F, B, True), None, by_construction=True, joint=True)
    for name in DECODER_READOUTS:
        m = get_metric(name)
        s, diag = _decoder_readout(m, main, max_pairs, cal.seed)
        fl = _decoder_readout(m, floor, max_pairs, cal.seed)[0] if floor else None
        ce = (pooled(_decoder_readout(m, twins[0], max_pairs, cal.seed)[0],
                     _decoder_readout(m, twins[1], max_pairs, cal.seed)[0]) if have_twins else None)
        emit(name, "decoder rows", s, fl, ce, degenerate=bool(diag.get("degenerate", False)),
             k_x=diag.get("k_x"), k_y=diag.get("k_y"))
    if main.acts_a is not None:
        s = _unit_readout(main, unit_dims, cal.seed, cal)
        fl = _unit_readout(floor, unit_dims, cal.seed, cal) if floor and floor.acts_a is not None else None
        ce = (pooled(_unit_readout(twins[0], unit_dims, cal.seed, cal), _unit_readout(twins[1], unit_dims, cal.seed, cal))
              if have_twins else None)
        emit("svcca-units", "held-out unit activations", s, fl, ce, degenerate=False)
    return rows
