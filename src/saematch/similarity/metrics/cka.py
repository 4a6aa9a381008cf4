"""Linear CKA (Kornblith et al. 2019) and its debiased-HSIC variant (Song et al. 2012)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from saematch.similarity.base import BaseMetric, center, check_xy, register


def _sq_norm(M: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", M, M, dtype=np.float64))


def _sq_norm_pair(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", A, B, dtype=np.float64))


def _gram(X: np.ndarray) -> np.ndarray:
    Xc = center(X)
    return Xc @ Xc.T


@register("cka-linear")
class LinearCKA(BaseMetric):
    """||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred data; invariant to rotation and scale."""

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        X, Y = check_xy(X, Y)
        Xc, Yc = center(X), center(Y)
        num = np.linalg.norm(Xc.T @ Yc) ** 2
        den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
        return float(num / den) if den > 0 else 0.0

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        """<K, L[p, p]> on n x n Gram matrices, or ||Xc^T Yc[p]||_F^2 when d1 * d2 is the smaller size."""
        X, Y = check_xy(X, Y)
        Xc, Yc = center(X), center(Y)
        den = float(np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
        if den == 0:
            return lambda perm: 0.0
        n, d1, d2 = X.shape[0], X.shape[1], Y.shape[1]
        if d1 * d2 < n * n:
            Xt, Yf = np.ascontiguousarray(Xc.T, dtype=np.float32), Yc.astype(np.float32)
            return lambda perm: float(_sq_norm(Xt @ Yf[perm]) / den)
        K, L = (Xc @ Xc.T).astype(np.float32), (Yc @ Yc.T).astype(np.float32)
        # <K, L[p, p]> = ||X^T Y[p]||_F^2 (centring commutes with permuting rows)
        return lambda perm: float(np.einsum("ij,ij->", K, L[np.ix_(perm, perm)], dtype=np.float64) / den)

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        """The score on rows ``idx`` from the uncentred Gram matrices, computed once: a row subset's Gram matrix is
        the sub-block, centred on the subset (tr(HKH HLH) = ||Xs^T Ys||^2 for the subset's centred rows)."""
        X, Y = check_xy(X, Y)
        K, L = X.astype(np.float64) @ X.T.astype(np.float64), Y.astype(np.float64) @ Y.T.astype(np.float64)

        def centred(G: np.ndarray) -> np.ndarray:
            return G - G.mean(0, keepdims=True) - G.mean(1, keepdims=True) + G.mean()

        def score(idx: np.ndarray) -> float:
            Kc, Lc = centred(K[np.ix_(idx, idx)]), centred(L[np.ix_(idx, idx)])
            den = np.sqrt(_sq_norm(Kc) * _sq_norm(Lc))
            return float(_sq_norm_pair(Kc, Lc) / den) if den > 0 else 0.0

        return score


def _hsic_u_parts(K: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    Kt = K.copy()
    np.fill_diagonal(Kt, 0.0)
    return Kt, float(Kt.sum()), Kt.sum(axis=1)


def _hsic_u(Kt, sK, rK, Lt, sL, rL, n) -> float:
    tr = float(np.einsum("ij,ij->", Kt, Lt, dtype=np.float64))
    return (tr + sK * sL / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(rK @ rL)) / (n * (n - 3))


@register("cka-linear-unbiased")
class UnbiasedLinearCKA(BaseMetric):
    """Linear CKA from the unbiased HSIC estimator; near 0 for independent data at any n."""

    def _parts(self, X: np.ndarray, Y: np.ndarray):
        X, Y = check_xy(X, Y, min_n=5)
        K, L = _gram(X), _gram(Y)
        pk, pl = _hsic_u_parts(K), _hsic_u_parts(L)
        n = X.shape[0]
        den = np.sqrt(max(_hsic_u(*pk, *pk, n), 0) * max(_hsic_u(*pl, *pl, n), 0))
        return pk, pl, n, den

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        pk, pl, n, den = self._parts(X, Y)
        return float(_hsic_u(*pk, *pl, n) / den) if den > 0 else 0.0

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        (Kt, sK, rK), (Lt, sL, rL), n, den = self._parts(X, Y)

        def score(perm: np.ndarray) -> float:
            return float(_hsic_u(Kt, sK, rK, Lt[np.ix_(perm, perm)], sL, rL[perm], n) / den) if den > 0 else 0.0

        return score
