"""Mutual k-nearest-neighbour overlap (Huh et al. 2024; Wolfram & Schein 2025).

For each item, the fraction of its k nearest neighbours (cosine) in X that are
also among its k nearest in Y, averaged.  Identical geometry gives 1; two
independent spaces give about k / (n - 1) (:func:`mknn_chance`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from saematch.similarity.base import BaseMetric, check_xy, register


def knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` indices of each row's k most cosine-similar other rows."""
    Z = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    return idx


def mknn_chance(n: int, k: int) -> float:
    return k / (n - 1)


@register("mknn")
class MutualKNN(BaseMetric):
    def __init__(self, k: int = 10):
        self.k = k

    def _prep(self, X: np.ndarray, Y: np.ndarray):
        X, Y = check_xy(X, Y, min_n=self.k + 2)
        n = X.shape[0]
        MX = np.zeros((n, n), dtype=bool)
        MX[np.arange(n)[:, None], knn_indices(X, self.k)] = True
        return MX, knn_indices(Y, self.k), n

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        MX, NY, n = self._prep(X, Y)
        return float(MX[np.arange(n)[:, None], NY].sum() / (n * self.k))

    def resampler(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        """The score on rows ``idx`` from both cosine-similarity matrices, computed once (a subset's neighbours are
        found in the sub-block, each row's own position excluded, as :meth:`compute` does on ``X[idx]``)."""
        X, Y = check_xy(X, Y, min_n=self.k + 2)
        cos = lambda M: (lambda Z: Z @ Z.T)(M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12))  # noqa: E731
        SX, SY, k = cos(X), cos(Y), self.k

        def score(idx: np.ndarray) -> float:
            n = len(idx)
            out = []
            for S in (SX, SY):
                sub = S[np.ix_(idx, idx)]
                np.fill_diagonal(sub, -np.inf)
                out.append(np.argpartition(-sub, k - 1, axis=1)[:, :k])
            MX = np.zeros((n, n), dtype=bool)
            MX[np.arange(n)[:, None], out[0]] = True
            return float(MX[np.arange(n)[:, None], out[1]].sum() / (n * k))

        return score

    def permuter(self, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], float]:
        MX, NY, n = self._prep(X, Y)

        def score(perm: np.ndarray) -> float:
            inv = np.empty(n, np.int64)
            inv[perm] = np.arange(n)  # item i of Y[perm] is item perm[i] of Y
            return float(MX[np.arange(n)[:, None], inv[NY[perm]]].sum() / (n * self.k))

        return score
