"""SVCCA on the matched features' held-out activations over units, valid at small sizes.

SVCCA on matched *decoder rows* has the matched pairs as items (n ~ 1k) and
d_model dimensions (~600); with so few items per dimension CCA finds near-perfect
correlations in anything, so a seed twin, another model and random weights all
score the same.  Here the items are test units (thousands) and the dimensions are
the matched features; each side is reduced to its top principal directions, up to
``var`` of the variance and at most ``max_dims`` (by default ``n // min_items_per_dim``),
so there are always enough items per dimension.  ``degenerate`` says when there are
not (an explicit ``max_dims`` too large for n).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from saematch.calibration.calibrate import Resampled
from saematch.errors import SaematchError
from saematch.similarity.base import check_xy
from saematch.similarity.metrics.cca import canonical_correlations, svd_reduce, unit_columns

log = logging.getLogger(__name__)


class UnitSVCCA(NamedTuple):
    """SVCCA over units.

    score: mean canonical correlation of the kept directions (NaN when a side has no variance).
    k_a, k_b: directions kept on each side; n: items (units); dims_a, dims_b: non-constant
    input columns (matched features) per side; max_dims: the cap that applied.
    degenerate: n < min_items_per_dim * max(k_a, k_b): too few items per dimension, where
    SVCCA is high for unrelated data; such a score must not be read.
    """

    score: float
    k_a: int
    k_b: int
    n: int
    dims_a: int
    dims_b: int
    max_dims: int
    degenerate: bool


def _prepare(X: np.ndarray, standardize: bool) -> np.ndarray:
    """Non-constant columns, optionally scaled to unit variance (each matched feature counts once)."""
    sd = X.std(axis=0)
    keep = sd > 1e-12 * max(float(np.abs(X).max(initial=0.0)), 1e-300)
    X = X[:, keep]
    return (X - X.mean(axis=0)) / sd[keep] if standardize else X


def svcca_on_units(acts_a_NP: np.ndarray, acts_b_NP: np.ndarray, var: float = 0.99, max_dims: int | None = None,
                   min_items_per_dim: int = 10, standardize: bool = True) -> UnitSVCCA:
    """SVCCA of ``[n, P_a]`` and ``[n, P_b]`` activations on the same n units (see the module docstring).

    max_dims=None caps the kept directions at ``max(1, n // min_items_per_dim)``.  Constant
    columns are dropped; ``standardize`` z-scores the rest, so that a frequent feature with large
    activations does not fill the variance budget alone.
    """
    A, B = check_xy(acts_a_NP, acts_b_NP)
    n = A.shape[0]
    A, B = _prepare(A, standardize), _prepare(B, standardize)
    cap = max(1, n // min_items_per_dim) if max_dims is None else int(max_dims)
    if cap < 1:
        raise SaematchError(f"max_dims must be >= 1, got {max_dims}")
    if A.shape[1] == 0 or B.shape[1] == 0:
        return UnitSVCCA(float("nan"), 0, 0, n, A.shape[1], B.shape[1], cap, True)
    Qa = unit_columns(svd_reduce(A, var)[:, :cap])
    Qb = unit_columns(svd_reduce(B, var)[:, :cap])
    rhos = canonical_correlations(Qa, Qb)
    ka, kb = Qa.shape[1], Qb.shape[1]
    degenerate = n < min_items_per_dim * max(ka, kb)
    if degenerate:
        log.warning("SVCCA on units is degenerate: %d units for %d dimensions (< %d per dimension)",
                    n, max(ka, kb), min_items_per_dim)
    return UnitSVCCA(float(rhos.mean()) if len(rhos) else float("nan"), ka, kb, n, A.shape[1], B.shape[1], cap,
                     bool(degenerate))


def svcca_units_readout(acts_a_NP: np.ndarray, acts_b_NP: np.ndarray, var: float = 0.99,
                        max_dims: int | None = None, min_items_per_dim: int = 10) -> Resampled:
    """The score as a readout for :func:`calibrate_readout`: the bootstrap resamples units.

    The cap is fixed from the full data so that every replicate keeps the same number of directions.
    """
    A, B = check_xy(acts_a_NP, acts_b_NP)
    cap = max(1, A.shape[0] // min_items_per_dim) if max_dims is None else int(max_dims)
    return Resampled(lambda idx: svcca_on_units(A[idx], B[idx], var, cap, min_items_per_dim).score, A.shape[0])


def matched_unit_acts(XA: sp.csr_matrix, XB: sp.csr_matrix, feature_a: np.ndarray, feature_b: np.ndarray,
                      units: np.ndarray | None = None, max_units: int | None = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``[n, P]`` activations of the matched features on the chosen units (a bool mask or indices).

    Beyond ``max_units`` units a seeded subsample is taken (the same units on both sides).
    Only ``n x P`` is densified, never the full ``N x F``.
    """
    XA, XB = sp.csr_matrix(XA), sp.csr_matrix(XB)
    if XA.shape[0] != XB.shape[0]:
        raise SaematchError(f"feature activations cover different units ({XA.shape[0]} vs {XB.shape[0]})")
    idx = np.arange(XA.shape[0]) if units is None else np.asarray(units)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if max_units is not None and len(idx) > max_units:
        idx = np.sort(np.random.default_rng([seed, 3]).choice(idx, max_units, replace=False))
    fa, fb = np.asarray(feature_a, np.int64), np.asarray(feature_b, np.int64)
    return (XA[idx][:, fa].toarray().astype(np.float64), XB[idx][:, fb].toarray().astype(np.float64))
