"""Distance correlation (Székely et al. 2007) between paired rows: 0 iff independent (population)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

from saematch.similarity.base import BaseMetric, check_xy, register


def _centred(D: np.ndarray) -> np.ndarray:
    return D - D.mean(0, keepdims=True) - D.mean(1, keepdims=True) + D.mean()


@register("dcor")
class DistanceCorrelation(BaseMetric):
    """sqrt(dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y))) from double-centred distance matrices."""

    def compute(self, X: np.ndarray, Y: np.ndarray) -> float:
        X, Y = check_xy(X, Y)
        A, B = _centred(squareform(pdist(X))), _centred(squareform(pdist(Y)))
        den = np.sqrt((A * A).mean() * (B * B).mean())
        return float(np.sqrt(max((A * B).mean(), 0.0) / den)) if den > 0 else 0.0
