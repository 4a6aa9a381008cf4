"""Intervals that resample the independent unit: test documents.

Three resampling schemes, each named in every row it produces (``resamples``, ``ci_method``):

- :func:`doc_bootstrap`: documents drawn with replacement, BCa intervals from ``scipy.stats.bootstrap``
  (no recentring).  The statistic is a function of document weights (multiplicities), so several readouts
  measured on the same test documents (score, floors, ceiling, calibrated ratios) share every replicate.
- :func:`half_sample`: half of the documents drawn without replacement.  For readouts that a duplicated unit
  would break (a duplicate is its own nearest neighbour).  A half-sample without replacement has, for a mean,
  the same variance as the full-sample estimate (finite-population correction 1 − ½), so the replicates' SD
  is the SE and the interval is value ± z·SE (replicate means sit away from the value for statistics that
  depend on the number of units, so their percentiles are not used).
- matched pairs, for readouts on decoder rows that no document enters (:mod:`saematch.calibration.calibrate`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, NamedTuple

import numpy as np
from scipy import stats

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


class Interval(NamedTuple):
    """A value with its interval.

    value: the statistic on all test documents; ci_low, ci_high: the interval; se: SD of the replicates;
    bias: mean of the replicates minus the value (reported, never subtracted); n_boot: replicates;
    n_undefined: replicates where the statistic is undefined (NaN), counted and left out;
    method: 'bca', 'percentile' (BCa undefined), 'half-sample normal', 'pairs percentile'.
    """

    value: float
    ci_low: float
    ci_high: float
    se: float
    bias: float
    n_boot: int
    n_undefined: int
    method: str

    def fields(self, name: str) -> dict:
        return {name: self.value, f"{name}_ci_low": self.ci_low, f"{name}_ci_high": self.ci_high, f"{name}_se": self.se,
                f"{name}_bias": self.bias, f"{name}_undefined": self.n_undefined}


def _weights(idx: np.ndarray, n_docs: int) -> np.ndarray:
    """Document multiplicities ``[..., D]`` of resampled document indices ``[..., m]``."""
    idx = np.asarray(idx).astype(np.int64)
    flat = idx.reshape(-1, idx.shape[-1])
    w = np.zeros((len(flat), n_docs))
    np.add.at(w, (np.repeat(np.arange(len(flat)), flat.shape[1]), flat.ravel()), 1.0)
    return w.reshape(*idx.shape[:-1], n_docs)


def doc_bootstrap(stat_w: Callable[[np.ndarray], np.ndarray], n_docs: int, n_boot: int, seed: int,
                  level: float = 0.95) -> list[Interval]:
    """BCa intervals over documents for the ``K`` statistics ``stat_w(w[B, D]) -> [K, B]``.

    Every statistic sees the same replicates.  Where a statistic is undefined in some replicates, BCa is
    undefined for it: its interval is then the percentile interval of the defined replicates
    (``method='percentile'``) and the count is reported.
    """
    if n_boot < 2:
        raise SaematchError(f"a bootstrap needs at least 2 replicates, got {n_boot}")
    full = np.asarray(stat_w(np.ones((1, n_docs))), np.float64)[:, 0]
    if n_docs < 2:
        log.warning("a document bootstrap needs at least 2 test documents, got %d: no intervals", n_docs)
        return [Interval(float(v), np.nan, np.nan, np.nan, np.nan, 0, 0, "too few documents") for v in full]

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        w = _weights(idx, n_docs)
        lead = w.shape[:-1]
        out = np.asarray(stat_w(w.reshape(-1, n_docs)), np.float64)
        return out.reshape(len(full), *lead)

    with warnings.catch_warnings():  # BCa's degenerate-distribution warnings: handled per statistic below
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(n_docs),), statistic, vectorized=True, n_resamples=n_boot, method="BCa",
                              confidence_level=level, random_state=np.random.default_rng([seed, 41]), axis=-1)
    reps = np.asarray(res.bootstrap_distribution, np.float64).reshape(len(full), -1)
    out = []
    for k, value in enumerate(full):
        r = reps[k]
        ok = r[np.isfinite(r)]
        bad = int(len(r) - len(ok))
        if len(ok) < 2 or not np.isfinite(value):
            out.append(Interval(float(value), np.nan, np.nan, np.nan, np.nan, n_boot, bad, "undefined"))
            continue
        lo, hi = float(res.confidence_interval.low[k]), float(res.confidence_interval.high[k])
        method = "bca"
        if bad or not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = (float(q) for q in np.quantile(ok, [(1 - level) / 2, (1 + level) / 2]))
            method = "percentile"
        out.append(Interval(float(value), lo, hi, float(ok.std(ddof=1)), float(ok.mean() - value), n_boot, bad, method))
    return out


def _normal(full: np.ndarray, reps: np.ndarray, level: float, method: str) -> list[Interval]:
    z = float(stats.norm.ppf((1 + level) / 2))
    out = []
    for k, value in enumerate(full):
        ok = reps[np.isfinite(reps[:, k]), k]
        bad = int(len(reps) - len(ok))
        if len(ok) < 2 or not np.isfinite(value):
            out.append(Interval(float(value), np.nan, np.nan, np.nan, np.nan, len(reps), bad, "undefined"))
            continue
        se = float(ok.std(ddof=1))
        out.append(Interval(float(value), value - z * se, value + z * se, se, float(ok.mean() - value), len(reps), bad,
                            method))
    return out


def half_sample(stat_groups: Callable[[np.ndarray], np.ndarray], n_docs: int, n_rep: int, seed: int,
                level: float = 0.95) -> list[Interval]:
    """Normal intervals from half-samples of documents without replacement, for ``K`` statistics
    ``stat_groups(keep[D] bool) -> [K]`` (all documents kept gives the value)."""
    rng = np.random.default_rng([seed, 43])
    full = np.asarray(stat_groups(np.ones(n_docs, bool)), np.float64)
    if n_docs < 4:
        log.warning("half-sampling needs at least 4 test documents, got %d: no intervals", n_docs)
        return [Interval(float(v), np.nan, np.nan, np.nan, np.nan, 0, 0, "too few documents") for v in full]
    reps = np.empty((n_rep, len(full)))
    for b in range(n_rep):
        keep = np.zeros(n_docs, bool)
        keep[rng.choice(n_docs, n_docs // 2, replace=False)] = True
        reps[b] = stat_groups(keep)
    return _normal(full, reps, level, "half-sample normal")


def half_sample_items(parts: list, combine: Callable[[list[float]], np.ndarray], n_rep: int, seed: int,
                      level: float = 0.95) -> list[Interval]:
    """Normal intervals from half-samples of each readout's own items (without replacement, drawn independently
    per readout), for readouts whose items are not documents (matched pairs' decoder rows).  ``parts`` are
    :class:`saematch.calibration.calibrate.Resampled`; ``combine(values) -> [K]``."""
    rng = np.random.default_rng([seed, 47])
    full = np.asarray(combine([p.value() for p in parts]), np.float64)
    reps = np.empty((n_rep, len(full)))
    for b in range(n_rep):
        vals = []
        for p in parts:
            idx = np.sort(rng.choice(p.n_items, max(2, p.n_items // 2), replace=False))
            vals.append(float(p.fn(idx)))
        reps[b] = combine(vals)
    return _normal(full, reps, level, "half-sample normal")


def ratio(score: np.ndarray, floor: np.ndarray, ceiling: np.ndarray | float) -> np.ndarray:
    """``(score − floor) / (ceiling − floor)`` elementwise; NaN where the ceiling does not exceed the floor."""
    s, f, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (score, floor, ceiling)))
    span = c - f
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, (s - f) / np.where(span > 0, span, 1.0), np.nan)
