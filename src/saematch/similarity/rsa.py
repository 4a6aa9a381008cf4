"""Representational similarity analysis.

Inner: a dissimilarity matrix over items for each side (1 - Pearson, cosine
distance, or euclidean).  Outer: Spearman (default) or Pearson between the
upper triangles.  Relabelling items permutes both rows and columns of a
dissimilarity matrix but not its values, so for the permutation null the
upper-triangle *ranks* are computed once and each permutation is a gather and
a dot product: no re-ranking, no recomputed distances.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata

from saematch.similarity.base import BaseMetric, check_xy, register

_PDIST = {"correlation": "correlation", "cosine": "cosine", "euclidean": "euclidean"}


def rdm(X: np.ndarray, inner: str) -> np.ndarray:
    """Condensed (upper-triangle) dissimilarities between rows of X."""
    d = pdist(X, metric=_PDIST[inner])
    return np.nan_to_num(d, nan=0.0)


def _standardise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


@register("rsa")
class RSA(BaseMetric):
    def __init__(self, inner: str = "correlation", outer: str = "spearman"):
        if inner not in _PDIST:
            raise ValueError(f"rsa inner must be one of {sorted(_PDIST)}")
        if outer not in ("spearman", "pearson"):
            raise ValueError("rsa outer must be spearman or pearson")
        self.inner = inner
        self.outer = outer

    def _vectors(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, Y = check_xy(X, Y)
        a, b = rdm(X, self.inner), rdm(Y, self.inner)
        if self.outer == "spearman":
            a, b = rankdata(a), rankdata(b)
        return _standardise(a), _standardise(b)

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> float:
        a, b = self._vectors(X, Y)
        return float(a @ b)

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        a, b = self._vectors(X, Y)
        A = squareform(a.astype(np.float32), checks=False)
        B = squareform(b.astype(np.float32), checks=False)

        def score(perm: np.ndarray) -> float:
            # sum over i<j of A_ij B_{p(i) p(j)}: half the full symmetric sum
            return float(0.5 * np.einsum("ij,ij->", A, B[np.ix_(perm, perm)], dtype=np.float64))

        return score
