"""The metric interface and registry.

Every metric is an object with hyperparameters set in ``__init__`` and
``__call__(X[n, d1], Y[n, d2]) -> float``; rows of X and Y are the same items
(matched feature pairs, or aligned units).  ``permuter(X, Y)`` returns a
function ``perm -> score of (X, Y[perm])`` that reuses whatever does not depend
on the pairing (ranks, bases, Gram matrices), which is what makes permutation
nulls fast.  ``resampler(X, Y)`` likewise returns ``idx -> score of (X[idx], Y[idx])``
for bootstraps over items.  Registered names are stable: results and reports key on them.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import numpy as np

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


class Metric(Protocol):
    name: str

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> float: ...

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]: ...

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]: ...


class BaseMetric:
    """Default permuter and resampler: recompute on the permuted / resampled rows."""

    name = "base"
    higher_is_similar = True

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        X, Y = check_xy(X, Y)
        return lambda perm: self(X, Y[perm])

    def permuter_batch(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``perms[m, n] -> scores[m]``; metrics with a batched kernel override this."""
        fn = self.permuter(X, Y)
        return lambda perms: np.array([fn(p) for p in perms], dtype=np.float64)

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        X, Y = check_xy(X, Y)
        return lambda idx: self(X[idx], Y[idx])

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


REGISTRY: dict[str, Callable[..., BaseMetric]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def _load_registry() -> None:
    """Import the metric modules; their @register decorators fill REGISTRY (lazily, not at import)."""
    import importlib

    for mod in ("cca", "cka", "knn", "maps", "rsa"):
        importlib.import_module(f"saematch.similarity.{mod}")


def get_metric(name: str, **params: object) -> BaseMetric:
    """A metric by its registered name, with hyperparameters."""
    _load_registry()
    if name not in REGISTRY:
        raise SaematchError(f"unknown similarity metric '{name}' (known: {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY[name]
    import inspect

    accepted = set(inspect.signature(cls).parameters)
    return cls(**{k: v for k, v in params.items() if k in accepted})


def metric_names() -> list[str]:
    _load_registry()
    return sorted(REGISTRY)
