"""Maps between two models' residual streams, scikit-learn style, saved as safetensors + json.

All maps take row vectors: ``transform(X_ND) -> Y_NE``.  Each exposes
``linear_part() -> (W_DE, b_E)``, the affine map that carries *directions*
(steering vectors) from one space to the other: a vector ``v`` maps to ``v @ W``
(no bias; a direction is a difference of two points).

* :class:`RidgeCVMap`: affine ridge; alpha picked by K-fold cross-validation
  (scikit-learn's ``GroupKFold`` by document when groups are given, else a
  shuffled ``KFold``) over a grid relative to the data's scale.  One
  eigendecomposition of the centred Gram per fold scores the whole alpha path in
  closed form, with the same solutions as scikit-learn's ``Ridge`` (checked in
  the tests) at a fraction of the cost of refitting it per alpha.
* :class:`WhitenedProcrustesMap`: whiten both spaces (ZCA with shrinkage), solve
  orthogonal Procrustes between them, colour with the target's covariance.
* :class:`~saematch.transfer.mlp.MLPMap` (in ``mlp.py``): the nonlinear map.
* ``persist.py``: :func:`save_map` / :func:`load_map` (safetensors + json).

R^2 convention (:func:`r2_score`): variance-weighted over output dimensions,
``1 - sum_e SSE_e / sum_e SST_e``, SST around the *test* mean (scikit-learn's
``multioutput="variance_weighted"``).  0 means no better than predicting the
test mean; dimensions with more variance count more.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def check_pair(X: Any, Y: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Float64 2-D arrays with the same number of finite rows, or one clear error."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2:
        raise SaematchError(f"maps need 2-D activations [units, d_model], got shapes {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise SaematchError(f"maps need the same units in both models, got {X.shape[0]} and {Y.shape[0]} rows")
    if X.shape[0] < min_n:
        raise SaematchError(f"maps need at least {min_n} units, got {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise SaematchError("activations hold NaN or inf values")
    return X, Y


def r2_score(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """Variance-weighted R^2 over output dims: 1 - total SSE / total SST (SST around Y_true's mean)."""
    Y_true, Y_pred = np.asarray(Y_true, np.float64), np.asarray(Y_pred, np.float64)
    sst = float(((Y_true - Y_true.mean(0)) ** 2).sum())
    return 1.0 - float(((Y_true - Y_pred) ** 2).sum()) / sst if sst > 0 else 0.0


def mean_cosine(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """Mean over rows of the cosine between predicted and true activation vectors (uncentred)."""
    num = (Y_true * Y_pred).sum(1)
    den = np.linalg.norm(Y_true, axis=1) * np.linalg.norm(Y_pred, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


class BaseMap:
    """Shared scoring and persistence; subclasses set ``kind`` and implement fit/transform."""

    kind = ""

    def transform(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def linear_part(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Held-out variance-weighted R^2 of ``transform(X)`` against ``Y``."""
        return r2_score(Y, self.transform(X))

    def cosine(self, X: np.ndarray, Y: np.ndarray) -> float:
        return mean_cosine(np.asarray(Y, np.float64), self.transform(X))

    def map_directions(self, V_KD: np.ndarray) -> np.ndarray:
        """Directions (rows) carried by the linear part: ``V @ W`` (no bias)."""
        return np.asarray(V_KD, np.float64) @ self.linear_part()[0]

    # persistence -------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {}

    def _tensors(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fitted(self) -> dict[str, Any]:
        return {}

    def _restore(self, tensors: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError


def _eig_centred(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means, eigenpairs (lam, V) of the centred Gram ``Xc^T Xc``, and ``B = V^T Xc^T Yc``."""
    mu_x, mu_y = X.mean(0), Y.mean(0)
    Xc = X - mu_x
    lam, V = np.linalg.eigh(Xc.T @ Xc)
    return mu_x, mu_y, np.clip(lam, 0.0, None), V, V.T @ (Xc.T @ (Y - mu_y))


def _ridge_solve(X: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Affine ridge (intercept unpenalised): ``W = V diag(1 / (lam + alpha)) B``, ``b = mu_y - mu_x W``."""
    mu_x, mu_y, lam, V, B = _eig_centred(X, Y)
    W = V @ (B / (lam + alpha)[:, None])
    return W, mu_y - mu_x @ W


def _ridge_path_r2(X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Validation R^2 (variance-weighted) of affine ridge at every alpha of ``grid``, from one eigh.

    With ``P = (Xv - mu_x) V`` and shrinkage ``D = 1 / (lam + alpha)``, the
    prediction is ``P diag(D) B``, so ``SSE = ||Yvc||^2 - 2 D.c + D^T (P^T P * B B^T) D``
    costs O(d^2) per alpha.
    """
    mu_x, mu_y, lam, V, B = _eig_centred(X, Y)
    P = (Xv - mu_x) @ V
    Yvc = Yv - mu_y
    c = ((P.T @ Yvc) * B).sum(1)
    GH = (P.T @ P) * (B @ B.T)
    sst = float(((Yv - Yv.mean(0)) ** 2).sum()) or 1.0
    D = 1.0 / (lam[None, :] + grid[:, None])  # [alphas, d]
    sse = float((Yvc**2).sum()) - 2 * D @ c + np.einsum("ak,kl,al->a", D, GH, D)
    return 1.0 - sse / sst


class RidgeCVMap(BaseMap):
    """Affine ridge ``Y ~ X W + b`` with alpha by cross-validation; fit sets ``W_``, ``b_``, ``alpha_``.

    ``alphas`` are relative to ``||Xc||_F^2 / d`` (the mean eigenvalue of the centred
    Gram matrix); ``alpha_`` is the absolute penalty used and ``alpha_rel_`` the grid
    value.  ``cv_r2_`` holds the mean validation R^2 per grid value.
    """

    kind = "ridge"

    def __init__(self, alphas: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0), cv_folds: int = 5, seed: int = 0):
        self.alphas = tuple(alphas)
        self.cv_folds = cv_folds
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Optional[np.ndarray] = None) -> "RidgeCVMap":
        from sklearn.model_selection import GroupKFold, KFold

        X, Y = check_pair(X, Y, min_n=2 * self.cv_folds)
        scale = float(((X - X.mean(0)) ** 2).sum()) / X.shape[1]
        grid = np.asarray(self.alphas, np.float64) * (scale if scale > 0 else 1.0)
        if groups is not None and len(np.unique(groups)) >= self.cv_folds:
            splits = GroupKFold(n_splits=self.cv_folds).split(X, groups=groups)
        else:
            splits = KFold(n_splits=self.cv_folds, shuffle=True, random_state=self.seed).split(X)
        scores = np.array([_ridge_path_r2(X[tr], Y[tr], X[va], Y[va], grid) for tr, va in splits])
        self.cv_r2_ = scores.mean(0)
        best = int(np.argmax(self.cv_r2_))
        self.alpha_, self.alpha_rel_ = float(grid[best]), float(self.alphas[best])
        self.W_, self.b_ = _ridge_solve(X, Y, self.alpha_)
        if best in (0, len(self.alphas) - 1) and len(self.alphas) > 1:
            log.warning("ridge cross-validation picked alpha %.3g at the edge of the grid", self.alpha_rel_)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float64) @ self.W_ + self.b_

    def linear_part(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W_, self.b_

    def _params(self) -> dict[str, Any]:
        return {"alphas": list(self.alphas), "cv_folds": self.cv_folds, "seed": self.seed}

    def _tensors(self) -> dict[str, np.ndarray]:
        return {"W": self.W_, "b": self.b_, "cv_r2": self.cv_r2_}

    def _fitted(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "alpha_rel": self.alpha_rel_}

    def _restore(self, tensors: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.W_, self.b_, self.cv_r2_ = tensors["W"], tensors["b"], tensors["cv_r2"]
        self.alpha_, self.alpha_rel_ = float(fitted["alpha"]), float(fitted["alpha_rel"])


def _sqrt_and_inv_sqrt(C: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric square root and inverse square root of ``C + eps * mean_eig * I``."""
    lam, V = np.linalg.eigh(C)
    lam = np.clip(lam, 0.0, None) + eps * max(float(lam.mean()), 1e-12)
    lam = np.maximum(lam, 1e-12)
    return (V * np.sqrt(lam)) @ V.T, (V / np.sqrt(lam)) @ V.T


class WhitenedProcrustesMap(BaseMap):
    """Orthogonal map between whitened spaces: ``f(x) = (x - mu_x) Wx Q Cy^{1/2} + mu_y``.

    ``Wx`` is X's ZCA whitening, ``Q`` the (semi-)orthogonal Procrustes solution
    between whitened X and whitened Y, ``Cy^{1/2}`` re-colours with Y's covariance.
    Fit sets ``mu_x_``, ``mu_y_``, ``Wx_``, ``Q_``, ``Cy_half_``.
    """

    kind = "procrustes"

    def __init__(self, whiten_eps: float = 1e-3):
        self.whiten_eps = whiten_eps

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Optional[np.ndarray] = None) -> "WhitenedProcrustesMap":
        X, Y = check_pair(X, Y)
        self.mu_x_, self.mu_y_ = X.mean(0), Y.mean(0)
        Xc, Yc = X - self.mu_x_, Y - self.mu_y_
        n = X.shape[0]
        _, self.Wx_ = _sqrt_and_inv_sqrt(Xc.T @ Xc / n, self.whiten_eps)
        self.Cy_half_, Wy = _sqrt_and_inv_sqrt(Yc.T @ Yc / n, self.whiten_eps)
        U, _, Vt = np.linalg.svd((Xc @ self.Wx_).T @ (Yc @ Wy), full_matrices=False)
        self.Q_ = U @ Vt
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.mu_x_) @ self.linear_part()[0] + self.mu_y_

    def linear_part(self) -> tuple[np.ndarray, np.ndarray]:
        W = self.Wx_ @ self.Q_ @ self.Cy_half_
        return W, self.mu_y_ - self.mu_x_ @ W

    def _params(self) -> dict[str, Any]:
        return {"whiten_eps": self.whiten_eps}

    def _tensors(self) -> dict[str, np.ndarray]:
        return {"mu_x": self.mu_x_, "mu_y": self.mu_y_, "Wx": self.Wx_, "Q": self.Q_, "Cy_half": self.Cy_half_}

    def _restore(self, tensors: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.mu_x_, self.mu_y_, self.Wx_ = tensors["mu_x"], tensors["mu_y"], tensors["Wx"]
        self.Q_, self.Cy_half_ = tensors["Q"], tensors["Cy_half"]
