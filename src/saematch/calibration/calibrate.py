"""Calibrated readouts: every score between a measured floor and a measured ceiling.

``calibrated = (score - floor) / (ceiling - floor)``: 0 at the floor (a
random-init model, or units shuffled on one side), 1 at the ceiling (the same
model with an SAE trained from another seed).  For readouts on raw activations
(CKA, mutual k-NN) the ceiling, the same model against itself, is 1 by
construction: pass ``ceiling=None`` and it is flagged as such, not computed.

Every readout is a :class:`Resampled`, a function ``idx -> value on the items
idx``.  The same interface covers means over matched pairs (bootstrap over
pairs, :func:`item_mean`) and scores over units (bootstrap over units, e.g.
:func:`metric_readout` for mutual k-NN), so one bootstrap gives CIs and SEs of
the score, the floor, the ceiling and the calibrated score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def calibrated(score: Any, floor: Any, ceiling: Any) -> Any:
    """``(score - floor) / (ceiling - floor)``, elementwise; NaN where the ceiling does not exceed the floor."""
    s, f, c = (np.asarray(v, np.float64) for v in (score, floor, ceiling))
    span = c - f
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(span > 0, (s - f) / np.where(span > 0, span, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class Resampled:
    """A readout that can be recomputed on resampled items.

    fn: ``idx [n] int -> float``, the readout on items ``idx`` (indices may repeat).
    n_items: how many items the readout has (pairs, or units).
    """

    fn: Callable[[np.ndarray], float]
    n_items: int

    def value(self) -> float:
        """The readout on all its items."""
        return _score(self.fn(np.arange(self.n_items)))


def item_mean(values: np.ndarray) -> Resampled:
    """Mean of per-item values (e.g. held-out correlations of matched pairs), NaN items ignored."""
    v = np.asarray(values, np.float64).ravel()
    if len(v) == 0:
        raise SaematchError("a readout needs at least one item")

    def fn(idx: np.ndarray) -> float:
        x = v[idx]
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else float("nan")

    return Resampled(fn, len(v))


def metric_readout(metric: Any, X: np.ndarray, Y: np.ndarray, distinct: bool = False) -> Resampled:
    """A registered similarity metric on paired rows (units): bootstrap resamples the rows.

    distinct=True scores each replicate on its distinct rows only: for neighbour-based
    metrics (mknn), where a repeated unit is its own nearest neighbour and inflates the
    score.  The replicate then has about 63% of the units, so its CI is conservative.
    """
    fn = metric.resampler(X, Y)
    if distinct:
        return Resampled(lambda idx: _score(fn(np.unique(idx))), int(np.asarray(X).shape[0]))
    return Resampled(lambda idx: _score(fn(idx)), int(np.asarray(X).shape[0]))


def _score(value: Any) -> float:
    """A metric's value as a float (a plain number, or a result object with a ``score``)."""
    return float(getattr(value, "score", value))


class Estimate(NamedTuple):
    """A value with its percentile bootstrap CI (no recentring) and bootstrap SE (NaN where not defined).

    bias: mean of the replicates minus the value, reported and never subtracted (resampling items with
    replacement shifts scores that depend on how many distinct items they see); n_undefined: replicates
    where the readout was undefined, counted and left out.
    """

    value: float
    ci_low: float
    ci_high: float
    se: float
    bias: float = float("nan")
    n_undefined: int = 0


@dataclass(frozen=True)
class CalibratedReadout:
    """One readout at one layer pair, placed between its floor and its ceiling.

    score, floor, ceiling, calibrated: each an :class:`Estimate`; calibrated is
    (score - floor) / (ceiling - floor), NaN when the ceiling does not exceed the floor.
    ceiling_by_construction: the ceiling is 1 by construction (same model against itself),
    not measured; its CI is then [1, 1] with SE 0.
    separation: (ceiling - floor) / bootstrap SE of that difference.
    uninformative: the ceiling does not exceed the floor by ``min_separation`` SEs, so the
    readout cannot tell a shared feature from a random network here: do not headline it.
    n_boot: bootstrap replicates; joint: score, floor and ceiling were resampled on the same items.
    """

    score: Estimate
    floor: Estimate
    ceiling: Estimate
    calibrated: Estimate
    ceiling_by_construction: bool
    separation: float
    uninformative: bool
    n_boot: int
    joint: bool

    def row(self) -> dict[str, Any]:
        """Flat, JSON- and DataFrame-friendly fields (``score``, ``score_ci_low``, ...)."""
        out: dict[str, Any] = {}
        for name in ("score", "floor", "ceiling", "calibrated"):
            est = getattr(self, name)
            out.update({name: est.value, f"{name}_ci_low": est.ci_low, f"{name}_ci_high": est.ci_high,
                        f"{name}_se": est.se, f"{name}_bias": est.bias, f"{name}_undefined": est.n_undefined})
        out.update(ceiling_by_construction=self.ceiling_by_construction, separation=self.separation,
                   uninformative=self.uninformative, n_boot=self.n_boot, joint=self.joint)
        return out


def _estimate(value: float, reps: np.ndarray, level: float) -> Estimate:
    ok = reps[np.isfinite(reps)]
    bad = int(len(reps) - len(ok))
    if len(ok) < 2 or not np.isfinite(value):
        return Estimate(float(value), float("nan"), float("nan"), float("nan"), float("nan"), bad)
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(value), float(lo), float(hi), float(ok.std(ddof=1)), float(ok.mean() - value), bad)


def pooled(a: Resampled, b: Resampled) -> Resampled:
    """The mean of two readouts (both models' seed twins): the items are both readouts' items, and a
    resample of them scores each readout on the items it drew from it."""
    na = a.n_items

    def fn(idx: np.ndarray) -> float:
        ia, ib = idx[idx < na], idx[idx >= na] - na
        if len(ia) == 0 or len(ib) == 0:
            return float("nan")
        return 0.5 * (_score(a.fn(ia)) + _score(b.fn(ib)))

    return Resampled(fn, na + b.n_items)


def calibrate_readout(score: Resampled, floor: Resampled, ceiling: Resampled | None = None, n_boot: int = 100,
                      seed: int = 0, level: float = 0.95, min_separation: float = 3.0,
                      joint: bool = False) -> CalibratedReadout:
    """Score, floor and ceiling with bootstrap CIs, the calibrated score, and the ``uninformative`` flag.

    ceiling=None: 1 by construction (raw-activation readouts).  joint=False resamples
    each readout's own items independently (matched pairs of different matchings);
    joint=True draws the same item indices for all three, for readouts computed on
    the same units (then their errors are paired and the calibrated CI is tighter).
    """
    if n_boot < 2:
        raise SaematchError(f"calibration needs at least 2 bootstrap replicates, got {n_boot}")
    parts = [score, floor] + ([] if ceiling is None else [ceiling])
    if any(p.n_items < 1 for p in parts):
        raise SaematchError("every readout needs at least one item")
    if joint and len({p.n_items for p in parts}) > 1:
        raise SaematchError(f"joint resampling needs the same items for all readouts, got counts "
                            f"{[p.n_items for p in parts]}")
    rng = np.random.default_rng([seed, 12])
    reps = np.full((n_boot, 3), np.nan)
    for b in range(n_boot):
        shared = rng.integers(0, parts[0].n_items, parts[0].n_items) if joint else None
        for j, p in enumerate(parts):
            reps[b, j] = _score(p.fn(shared if joint else rng.integers(0, p.n_items, p.n_items)))
    if ceiling is None:
        reps[:, 2] = 1.0
    s, f = score.value(), floor.value()
    c = 1.0 if ceiling is None else ceiling.value()
    cal_reps = calibrated(reps[:, 0], reps[:, 1], reps[:, 2])
    diff = reps[:, 2] - reps[:, 1]
    diff = diff[np.isfinite(diff)]
    se_diff = float(diff.std(ddof=1)) if len(diff) >= 2 else float("nan")
    if se_diff > 0:
        separation = (c - f) / se_diff
    else:
        separation = float("inf") if c > f and se_diff == 0 else float("nan")
    uninformative = not (np.isfinite(c - f) and c - f > 0 and separation > min_separation)
    ceil = Estimate(1.0, 1.0, 1.0, 0.0) if ceiling is None else _estimate(c, reps[:, 2], level)
    out = CalibratedReadout(_estimate(s, reps[:, 0], level), _estimate(f, reps[:, 1], level), ceil,
                            _estimate(calibrated(s, f, c), cal_reps, level), ceiling is None, float(separation),
                            bool(uninformative), n_boot, joint)
    if uninformative:
        log.info("readout uninformative: ceiling %.4f vs floor %.4f (%.1f SEs apart, %.1f needed)",
                 c, f, separation, min_separation)
    return out
