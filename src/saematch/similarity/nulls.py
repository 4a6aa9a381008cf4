"""Permutation nulls and bootstrap confidence intervals for any registered metric."""

from __future__ import annotations

import types
from typing import Any, Mapping, NamedTuple

import numpy as np

from saematch.similarity.base import BaseMetric, check_xy


class Scored(NamedTuple):
    """A metric value with its permutation null and bootstrap CI.

    p_value = (1 + #{null at least as similar as observed}) / (1 + n_permutations);
    z = (score - null_mean) / null_sd (sign flipped for distances, so larger is
    always "more similar than chance").  NaN where not computed.  This null
    shuffles the pairing: it tests against *no pairing at all*, not against a
    random network (see ``saematch.calibration`` for floors and ceilings).
    diagnostics: the metric's own, from the full-data score.
    """

    score: float
    p_value: float
    null_mean: float
    null_sd: float
    z: float
    n_permutations: int
    ci_low: float
    ci_high: float
    diagnostics: Mapping[str, Any] = types.MappingProxyType({})


def permutation_null(metric: BaseMetric, X: np.ndarray, Y: np.ndarray, n: int, seed: int = 0,
                     batch: int = 32) -> np.ndarray:
    """``[n]`` scores of the metric with the pairing of rows shuffled (scored ``batch`` permutations at a time)."""
    rng = np.random.default_rng(seed)
    fn = metric.permuter_batch(X, Y)
    m = np.asarray(X).shape[0]
    out = []
    for start in range(0, n, batch):
        out.append(fn(np.stack([rng.permutation(m) for _ in range(min(batch, n - start))])))
    return np.concatenate(out) if out else np.zeros(0)


def bootstrap(metric: BaseMetric, X: np.ndarray, Y: np.ndarray, n: int, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI over items resampled with replacement (NaN when n == 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    X, Y = check_xy(X, Y)
    rng = np.random.default_rng([seed, 1])
    m = X.shape[0]
    fn = metric.resampler(X, Y)
    vals = np.array([fn(rng.integers(0, m, m)) for _ in range(n)])
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def score_with_null(metric: BaseMetric, X: np.ndarray, Y: np.ndarray, n_perm: int, n_boot: int = 0, seed: int = 0) -> Scored:
    res = metric(X, Y)
    obs = float(res.score)
    if n_perm > 0:
        null = permutation_null(metric, X, Y, n_perm, seed)
        sign = 1.0 if metric.higher_is_similar else -1.0
        p = (1 + int(np.sum(sign * null >= sign * obs - 1e-12))) / (1 + n_perm)
        mu, sd = float(null.mean()), float(null.std(ddof=1)) if n_perm > 1 else float("nan")
        z = sign * (obs - mu) / sd if sd and sd > 0 else float("nan")
    else:
        p = mu = sd = z = float("nan")
    lo, hi = bootstrap(metric, X, Y, n_boot, seed)
    return Scored(obs, p, mu, sd, z, n_perm, lo, hi, dict(res.diagnostics))
