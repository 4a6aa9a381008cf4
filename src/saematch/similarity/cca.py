"""SVCCA and PWCCA.

SVCCA (Raghu et al. 2017): centre, keep the top singular directions of each
side that explain ``var`` of its variance, then CCA; the score is the mean
canonical correlation.  The kept counts are recorded (``k_x_``, ``k_y_``).
The seed paper's code effectively keeps one component because its variance
test never passes; ``svcca-k1`` reproduces that, for comparison only.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from saematch.similarity.base import BaseMetric, center, check_xy, register

log = logging.getLogger(__name__)


def svd_reduce(X: np.ndarray, var: float, k: int | None = None) -> np.ndarray:
    """Centred X projected on its top singular directions: the smallest k with >= ``var`` of the variance."""
    Xc = center(X)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    if k is None:
        frac = np.cumsum(s ** 2) / max(np.sum(s ** 2), 1e-300)
        k = int(np.searchsorted(frac, var - 1e-12) + 1)
    k = max(1, min(k, int((s > s[0] * 1e-10).sum()) if len(s) and s[0] > 0 else 1))
    return U[:, :k] * s[:k]


def orth_basis(Z: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the (centred) column space of Z."""
    Q, R = np.linalg.qr(center(Z))
    keep = np.abs(np.diag(R)) > 1e-10 * max(np.abs(np.diag(R)).max(initial=0), 1e-300)
    return Q[:, keep]


def canonical_correlations(Qx: np.ndarray, Qy: np.ndarray) -> np.ndarray:
    return np.clip(np.linalg.svd(Qx.T @ Qy, compute_uv=False), 0.0, 1.0)


@register("svcca")
class SVCCA(BaseMetric):
    """Mean canonical correlation after SVD reduction to ``var`` of the variance."""

    def __init__(self, var: float = 0.99, n_components: int | None = None):
        self.var = var
        self.n_components = n_components  # fixed count instead of the variance rule (svcca-k1 uses 1)

    def _bases(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, Y = check_xy(X, Y)
        Qx = orth_basis(svd_reduce(X, self.var, self.n_components))
        Qy = orth_basis(svd_reduce(Y, self.var, self.n_components))
        self.k_x_, self.k_y_ = Qx.shape[1], Qy.shape[1]
        self.small_n_ = X.shape[0] <= 2 * max(self.k_x_, self.k_y_)  # CCA is near 1 by construction then
        return Qx, Qy

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> float:
        Qx, Qy = self._bases(X, Y)
        self.rhos_ = canonical_correlations(Qx, Qy)
        return _mean(self.rhos_)

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        Qx, Qy = self._bases(X, Y)  # a row permutation of Y permutes its reduced basis rows too
        return lambda perm: _mean(canonical_correlations(Qx, Qy[perm]))


def _mean(rhos: np.ndarray) -> float:
    """Mean canonical correlation; NaN when a side has no variance at all."""
    return float(rhos.mean()) if len(rhos) else float("nan")


@register("svcca-k1")
class SVCCAK1(SVCCA):
    """The published behaviour (one component per side); for comparison only."""

    def __init__(self) -> None:
        super().__init__(var=0.99, n_components=1)


@register("pwcca")
class PWCCA(BaseMetric):
    """Projection-weighted CCA (Morcos et al. 2018), weights from X's canonical variates."""

    def __init__(self, var: float = 0.99):
        self.var = var

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> float:
        X, Y = check_xy(X, Y)
        Xr, Yr = svd_reduce(X, self.var), svd_reduce(Y, self.var)
        Qx, Qy = orth_basis(Xr), orth_basis(Yr)
        U, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
        H = Qx @ U  # canonical variates of X, [n, k]
        alpha = np.abs(H.T @ center(Xr)).sum(axis=1)
        alpha = alpha[: len(rho)] / max(alpha[: len(rho)].sum(), 1e-300)
        return float(np.sum(alpha * np.clip(rho, 0, 1)))
