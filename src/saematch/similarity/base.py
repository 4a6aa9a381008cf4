"""The metric interface and registry.

Every metric is an object with hyperparameters set in ``__init__`` and a pure
``__call__(X[n, d1], Y[n, d2]) -> MetricResult`` (score plus diagnostics, the
metric object unchanged); rows of X and Y are the same items
(matched feature pairs, or aligned units).  ``permuter(X, Y)`` returns a
function ``perm -> score of (X, Y[perm])`` that reuses whatever does not depend
on the pairing (ranks, bases, Gram matrices), which is what makes permutation
nulls fast.  ``resampler(X, Y)`` likewise returns ``idx -> score of (X[idx], Y[idx])``
for bootstraps over items.  Registered names are stable: results and reports key on them.

Metrics register with ``@register("name")`` in any module of this package
(:data:`saematch.registry.METRICS` imports them all when first read); a
metric's hyperparameters come only from ``similarity.metric_params.<name>`` and
must be arguments of its ``__init__``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, NamedTuple, Protocol

import numpy as np

from saematch.errors import ConfigError, SaematchError
from saematch.registry import METRICS

log = logging.getLogger(__name__)


class MetricResult(NamedTuple):
    """One metric value.

    score: the metric on the full data; diagnostics: what it measured on the way
    (kept dimensions, a degeneracy flag, a held-out cosine ...), metric-specific.
    """

    score: float
    diagnostics: Mapping[str, Any]

    def __float__(self) -> float:
        return float(self.score)


class Metric(Protocol):
    name: str

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> MetricResult: ...

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]: ...

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]: ...


class BaseMetric:
    """Default permuter and resampler: recompute on the permuted / resampled rows."""

    name = "base"
    higher_is_similar = True

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float | MetricResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> MetricResult:
        """The score and diagnostics; pure (nothing is stored on the metric)."""
        out = self.compute(X, Y)
        return out if isinstance(out, MetricResult) else MetricResult(float(out), {})

    def score(self, X: np.ndarray, Y: np.ndarray) -> float:
        return float(self.compute(X, Y))

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        X, Y = check_xy(X, Y)
        return lambda perm: self.score(X, Y[perm])

    def permuter_batch(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``perms[m, n] -> scores[m]``; metrics with a batched kernel override this."""
        fn = self.permuter(X, Y)
        return lambda perms: np.array([fn(p) for p in perms], dtype=np.float64)

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        X, Y = check_xy(X, Y)
        return lambda idx: self.score(X[idx], Y[idx])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


class BatchPermuted(BaseMetric):
    """A metric whose null kernel is batched: single permutations go through ``permuter_batch`` too."""

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        batch = self.permuter_batch(X, Y)
        return lambda perm: float(batch(perm[None])[0])


def check_xy(X: np.ndarray, Y: np.ndarray, min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Validate paired data: 2-D, same number of rows, finite; returns float64 copies."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2:
        raise SaematchError(f"metrics need 2-D arrays [n, d], got shapes {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise SaematchError(f"metrics need the same items on both sides, got {X.shape[0]} and {Y.shape[0]} rows")
    if X.shape[0] < min_n:
        raise SaematchError(f"metrics need at least {min_n} items, got {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise SaematchError("metric inputs contain NaN or infinite values")
    return X, Y


def center(X: np.ndarray) -> np.ndarray:
    return X - X.mean(axis=0, keepdims=True)


register = METRICS.register


def get_metric(name: str, **params: object) -> BaseMetric:
    """A metric by its registered name, with its own hyperparameters (an unknown one is an error)."""
    import inspect

    cls = METRICS.get(name)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(f"similarity metric '{name}' has no parameter '{unknown[0]}' "
                          f"(its parameters: {', '.join(sorted(accepted)) or 'none'})")
    return cls(**params)


def metric_names() -> list[str]:
    return METRICS.names()
