"""Fitted linear maps between spaces, scikit-learn style, and their registry metrics.

* :class:`ProcrustesMap`: orthogonal map after centring and scaling to unit
  Frobenius norm; ``score`` is the Procrustes distance (0 = same up to
  rotation/reflection, translation and scale).
* :class:`RidgeMap`: ridge regression A -> B; ``score`` is held-out R^2 and
  ``cosine`` the mean cosine between predicted and true rows.  Closed-form
  ridge in numpy rather than adding scikit-learn as a dependency.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from saematch.similarity.base import BaseMetric, MetricResult, check_xy, register


def _normalise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    mu = X.mean(axis=0)
    Xc = X - mu
    s = float(np.linalg.norm(Xc))
    return Xc / (s if s > 0 else 1.0), mu, s if s > 0 else 1.0


class ProcrustesMap:
    """Orthogonal (semi-orthogonal when d1 != d2) map ``X -> Y``; fit sets ``Q_``."""

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "ProcrustesMap":
        X, Y = check_xy(X, Y)
        Xn, self.mu_x_, self.s_x_ = _normalise(X)
        Yn, self.mu_y_, self.s_y_ = _normalise(Y)
        U, s, Vt = np.linalg.svd(Xn.T @ Yn, full_matrices=False)
        self.Q_ = U @ Vt
        self.nuclear_ = float(s.sum())
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X mapped into Y's space and units."""
        return ((np.asarray(X, float) - self.mu_x_) / self.s_x_) @ self.Q_ * self.s_y_ + self.mu_y_

    def score(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Procrustes distance between normalised Y and mapped X, in [0, sqrt(2)]."""
        Xn = (np.asarray(X, float) - self.mu_x_) / self.s_x_
        Yn = (np.asarray(Y, float) - self.mu_y_) / self.s_y_
        return float(np.linalg.norm(Xn @ self.Q_ - Yn))


@register("procrustes")
class Procrustes(BaseMetric):
    """Orthogonal Procrustes distance (lower = more similar)."""

    higher_is_similar = False

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        m = ProcrustesMap().fit(X, Y)
        return float(np.sqrt(max(2.0 - 2.0 * m.nuclear_, 0.0)))

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        X, Y = check_xy(X, Y)
        Xn, Yn = _normalise(X)[0], _normalise(Y)[0]
        return lambda perm: float(np.sqrt(max(2.0 - 2.0 * np.linalg.svd(Xn.T @ Yn[perm], compute_uv=False).sum(), 0.0)))


class RidgeMap:
    """Ridge regression ``Y ~ X W + b``; fit sets ``W_`` and ``b_``."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "RidgeMap":
        X, Y = check_xy(X, Y, min_n=2)
        self.mu_x_, mu_y = X.mean(0), Y.mean(0)
        Xc = X - self.mu_x_
        A = Xc.T @ Xc + self.alpha * np.eye(X.shape[1])
        self.W_ = np.linalg.solve(A, Xc.T @ (Y - mu_y))
        self.b_ = mu_y - self.mu_x_ @ self.W_
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, float) @ self.W_ + self.b_

    def score(self, X: np.ndarray, Y: np.ndarray) -> float:
        """R^2 over all outputs: 1 - SSE / SST."""
        P, Y = self.transform(X), np.asarray(Y, float)
        sst = float(((Y - Y.mean(0)) ** 2).sum())
        return 1.0 - float(((Y - P) ** 2).sum()) / sst if sst > 0 else 0.0

    def cosine(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Mean cosine between predicted and true rows."""
        P, Y = self.transform(X), np.asarray(Y, float)
        num = (P * Y).sum(1)
        den = np.linalg.norm(P, axis=1) * np.linalg.norm(Y, axis=1)
        return float(np.mean(num / np.maximum(den, 1e-12)))


@register("linear-r2")
class LinearR2(BaseMetric):
    """Held-out R^2 of ridge A -> B on a seeded 80/20 split of the items; the mean cosine in the diagnostics."""

    def __init__(self, alpha: float = 1.0, test_fraction: float = 0.2, seed: int = 0):
        self.alpha = alpha
        self.test_fraction = test_fraction
        self.seed = seed

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        X, Y = check_xy(X, Y, min_n=5)
        idx = np.random.default_rng(self.seed).permutation(X.shape[0])
        n_test = max(1, int(round(self.test_fraction * X.shape[0])))
        te, tr = idx[:n_test], idx[n_test:]
        m = RidgeMap(self.alpha).fit(X[tr], Y[tr])
        return MetricResult(m.score(X[te], Y[te]), {"cosine": m.cosine(X[te], Y[te])})
