"""Permutation calibration of a similarity score, as Gröger et al. (2026) define it.

The null breaks the row correspondence of X and Y: K permutations of Y's rows.  The threshold τ is the
``ceil((1 − α)(K + 1))``-th order statistic of the observed score together with the K null scores, the
calibrated score is ``clamp((s − τ) / (s_max − τ), 0, 1)`` (0 wherever the score does not beat chance at
level α) and the p-value is ``(1 + #{null ≥ s}) / (1 + K)``.

Searching for the best layer pair inflates the maximum: :func:`layer_search_calibrate` applies each
permutation to every layer's rows at once and takes the maximum over layer pairs inside each permutation,
so the null is the null of the maximum.

Scores come from the registered metrics' batched permutation kernels (``permuter_batch``), so a null costs
what :func:`saematch.similarity.nulls.permutation_null` costs.  Distances (``higher_is_similar=False``) are
calibrated on their negation and have no ``s_max``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from saematch.errors import SaematchError
from saematch.similarity.base import BaseMetric, check_xy

DEFAULT_PERMUTATIONS = 200
DEFAULT_ALPHA = 0.05


class PermCalibrated(NamedTuple):
    """A score calibrated against its row-permutation null.

    score: the observed score; calibrated: clamp((s − τ) / (s_max − τ), 0, 1), or max(s − τ, 0) when s_max is
    None; p_value: (1 + #{null ≥ s}) / (1 + K); tau: the (1 − α) order statistic of {s} ∪ null;
    null_mean, null_sd: of the K null scores; n_permutations: K; alpha; s_max.
    For distances every quantity is on the negated scale (larger is more similar).
    """

    score: float
    calibrated: float
    p_value: float
    tau: float
    null_mean: float
    null_sd: float
    n_permutations: int
    alpha: float
    s_max: float | None

    def fields(self, prefix: str = "perm") -> dict:
        """Flat columns for a readout row: ``perm_calibrated``, ``perm_p_value``, ``perm_tau``, ``perm_k``."""
        return {f"{prefix}_calibrated": self.calibrated, f"{prefix}_p_value": self.p_value, f"{prefix}_tau": self.tau,
                f"{prefix}_k": self.n_permutations}


class LayerSearch(NamedTuple):
    """The best layer pair and its calibration against the null of the maximum.

    scores_AB: the observed score of every (A layer, B layer); best: (i, j) of the maximum; null_max_K: the
    maximum over all layer pairs in each permutation; result: the maximum calibrated against null_max_K.
    """

    scores_AB: np.ndarray
    best: tuple[int, int]
    null_max_K: np.ndarray
    result: PermCalibrated


def draw_permutations(n_items: int, n_permutations: int, seed: int) -> np.ndarray:
    """``[K, n]`` row permutations, reproducible from the seed."""
    if n_permutations < 1:
        raise SaematchError(f"permutation calibration needs at least 1 permutation, got {n_permutations}")
    rng = np.random.default_rng([seed, 53])
    return np.stack([rng.permutation(n_items) for _ in range(n_permutations)])


def threshold(observed: float, null_K: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """τ: the ``ceil((1 − α)(K + 1))``-th smallest of the observed score and the K null scores."""
    if not 0.0 < alpha < 1.0:
        raise SaematchError(f"alpha must be in (0, 1), got {alpha}")
    combined = np.sort(np.append(np.asarray(null_K, np.float64), observed))
    k = len(combined) - 1
    return float(combined[min(max(math.ceil((1.0 - alpha) * (k + 1)) - 1, 0), k)])


def calibrate_from_null(observed: float, null_K: np.ndarray, alpha: float = DEFAULT_ALPHA,
                        s_max: float | None = 1.0) -> PermCalibrated:
    """Calibrate an observed similarity against K null scores (larger is more similar)."""
    null = np.asarray(null_K, np.float64).ravel()
    if len(null) < 1 or not np.isfinite(null).all() or not np.isfinite(observed):
        raise SaematchError(f"permutation calibration needs a finite score and finite null scores "
                            f"(score {observed}, {int((~np.isfinite(null)).sum())} of {len(null)} null scores undefined)")
    if s_max is not None and s_max <= 0:
        raise SaematchError(f"s_max must be positive, got {s_max}")
    tau = threshold(observed, null, alpha)
    # ties with the observed value count as "at least as similar"; a relative tolerance absorbs the rounding
    # of a batched kernel against the direct score
    p = (1 + int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))) / (1 + len(null))
    if s_max is None:
        cal = max(observed - tau, 0.0)
    else:
        cal = float(np.clip((observed - tau) / max(s_max - tau, 1e-12), 0.0, 1.0))
    sd = float(null.std(ddof=1)) if len(null) > 1 else float("nan")
    return PermCalibrated(float(observed), float(cal), float(p), tau, float(null.mean()), sd, len(null), alpha, s_max)


def _sign_and_smax(metric: BaseMetric, s_max: float | None) -> tuple[float, float | None]:
    if metric.higher_is_similar:
        return 1.0, s_max
    return -1.0, None  # a distance has no upper bound of similarity: report the effect size over τ


def _null(metric: BaseMetric, X: np.ndarray, Y: np.ndarray, perms_KN: np.ndarray, batch: int) -> np.ndarray:
    fn = metric.permuter_batch(X, Y)
    return np.concatenate([np.asarray(fn(perms_KN[i:i + batch]), np.float64) for i in range(0, len(perms_KN), batch)])


def _check_perms(perms_KN: np.ndarray, n: int) -> np.ndarray:
    perms = np.asarray(perms_KN, np.int64)
    if perms.ndim != 2 or perms.shape[1] != n:
        raise SaematchError(f"permutations must be [K, {n}], got shape {perms.shape}")
    return perms


def permutation_calibrate(metric: BaseMetric, X: np.ndarray, Y: np.ndarray,
                          n_permutations: int = DEFAULT_PERMUTATIONS, alpha: float = DEFAULT_ALPHA,
                          s_max: float | None = 1.0, seed: int = 0, perms_KN: np.ndarray | None = None,
                          batch: int = 32) -> PermCalibrated:
    """A registered metric on paired rows X[n, d1], Y[n, d2], calibrated against K permutations of Y's rows.

    perms_KN: the permutations to use (``[K, n]``); drawn from the seed when None.
    """
    X, Y = check_xy(X, Y)
    perms = draw_permutations(len(X), n_permutations, seed) if perms_KN is None else _check_perms(perms_KN, len(X))
    sign, smax = _sign_and_smax(metric, s_max)
    observed = sign * float(metric(X, Y).score)
    return calibrate_from_null(observed, sign * _null(metric, X, Y, perms, batch), alpha, smax)


def layer_search_calibrate(metric: BaseMetric, X_layers: Sequence[np.ndarray], Y_layers: Sequence[np.ndarray],
                           n_permutations: int = DEFAULT_PERMUTATIONS, alpha: float = DEFAULT_ALPHA,
                           s_max: float | None = 1.0, seed: int = 0, perms_KN: np.ndarray | None = None,
                           batch: int = 32) -> LayerSearch:
    """The best of all (A layer, B layer) scores, calibrated against the null of the maximum.

    X_layers: A's layers, each ``[n, d]``; Y_layers: B's layers, each ``[n, d']``, all on the same n units.
    Each permutation is applied to the rows of every B layer, and the maximum over all layer pairs is taken
    inside the permutation (Gröger et al.'s aggregation-aware null).  For the best B layer of one A layer,
    pass that A layer alone.
    """
    if not X_layers or not Y_layers:
        raise SaematchError("a layer search needs at least one layer on each side")
    n = np.asarray(X_layers[0]).shape[0]
    if any(np.asarray(M).shape[0] != n for M in (*X_layers, *Y_layers)):
        raise SaematchError(f"a layer search needs the same units in every layer, got row counts "
                            f"{[np.asarray(M).shape[0] for M in (*X_layers, *Y_layers)]}")
    perms = draw_permutations(n, n_permutations, seed) if perms_KN is None else _check_perms(perms_KN, n)
    sign, smax = _sign_and_smax(metric, s_max)
    scores = np.empty((len(X_layers), len(Y_layers)))
    null_max = np.full(len(perms), -np.inf)
    for i, X in enumerate(X_layers):
        for j, Y in enumerate(Y_layers):
            Xc, Yc = check_xy(X, Y)
            scores[i, j] = sign * float(metric(Xc, Yc).score)
            null_max = np.maximum(null_max, sign * _null(metric, Xc, Yc, perms, batch))
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    result = calibrate_from_null(float(scores[best]), null_max, alpha, smax)
    return LayerSearch(sign * scores, (int(best[0]), int(best[1])), sign * null_max, result)
