"""Pearson correlation between every feature of SAE A and every feature of SAE B.

From sufficient statistics over the same N units: per-feature sums and sums of
squares, and the cross-product ``S = X_A^T X_B`` accumulated one A feature at a
time from the co-activations (``coact.py``), so the work is N * k_A * k_B,
never N * F_A * F_B, and no dense [units x features] matrix exists:

    corr_ij = (S_ij / N - mu_i nu_j) / (sigma_i tau_j)

SAE activations are non-negative, so a pair that never co-fires has
``corr <= 0``: every positive correlation lies on the sparsity pattern of S.
Features that never fire (sigma = 0) have undefined correlation and are
excluded (their rows/columns are NaN in dense output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import scipy.sparse as sp

from saematch.errors import SaematchError
from saematch.matching.coact import CorrRows, column_sums

if TYPE_CHECKING:  # features.encode imports torch: only check_pair needs it, on use
    from saematch.features.encode import FeatureStats


@dataclass(frozen=True)
class CorrStats:
    """Sufficient statistics for the correlation of A's and B's features."""

    a: FeatureStats
    b: FeatureStats
    n_units: int

    @property
    def valid_a(self) -> np.ndarray:
        return ~self.a.dead

    @property
    def valid_b(self) -> np.ndarray:
        return ~self.b.dead


def check_pair(XA: sp.csr_matrix, XB: sp.csr_matrix) -> CorrStats:
    if XA.shape[0] != XB.shape[0]:
        raise SaematchError(f"feature activations cover different units ({XA.shape[0]} vs {XB.shape[0]})")
    if XA.shape[0] < 2:
        raise SaematchError("correlation needs at least two units")
    for name, X in (("A", XA), ("B", XB)):
        if X.nnz and not np.isfinite(X.data).all():
            raise SaematchError(f"feature activations of model {name} contain NaN or infinite values")
    return CorrStats(feature_stats(XA), feature_stats(XB), XA.shape[0])


def feature_stats(X: sp.spmatrix) -> FeatureStats:
    """``features.encode.FeatureStats`` of ``[N, F]`` activations in one compiled pass over the stored entries.

    No CSC copy (``FeatureStats.of`` makes one: a second at 1M units for the side the kernel reads as CSR), and
    the sums are accumulated in float64.
    """
    from saematch.features.encode import FeatureStats

    N, F = X.shape
    if getattr(X, "format", None) == "csc":
        cols = np.repeat(np.arange(F, dtype=np.int32), np.diff(X.indptr))
    else:
        X = sp.csr_matrix(X)
        cols = X.indices
    count, total, total_sq, mx = np.zeros(F, np.int64), np.zeros(F), np.zeros(F), np.full(F, -np.inf)
    column_sums(cols, X.data, count, total, total_sq, mx)
    mx = np.where(count < N, np.maximum(mx, 0.0), mx)  # implicit zeros count towards the largest value
    return FeatureStats(int(N), count, total, total_sq, np.where(count > 0, mx, 0.0))


BLOCK_ELEMS = 1 << 22  # correlation entries per block (16 MB of float32)


def corr_blocks(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_offset, C[rows, F_B])`` float32 correlation blocks over all A features (NaN = excluded)."""
    yield from row_blocks(corr_rows(XA, XB, st))


def corr_rows(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats) -> CorrRows:
    return CorrRows(XA, XB, st.a.mean, st.a.std, st.valid_a, st.b.mean, st.b.std, st.valid_b)


def row_blocks(rows: CorrRows) -> Iterator[tuple[int, np.ndarray]]:
    """All correlation rows of ``rows`` in blocks of about ``BLOCK_ELEMS`` entries."""
    F_A, F_B = rows.shape
    step = max(1, BLOCK_ELEMS // max(F_B, 1))
    for lo in range(0, F_A, step):
        yield lo, rows(lo, min(lo + step, F_A))


def dense_corr(XA: sp.csr_matrix, XB: sp.csr_matrix) -> tuple[np.ndarray, CorrStats]:
    """Full ``[F_A, F_B]`` float32 correlation; NaN for excluded (dead/constant) features."""
    st = check_pair(XA, XB)
    C = np.empty((XA.shape[1], XB.shape[1]), np.float32)
    for lo, blk in corr_blocks(XA, XB, st):
        C[lo:lo + len(blk)] = blk
    return C, st


@dataclass(frozen=True)
class TopLists:
    """Each row's and each column's k largest positive correlations, sorted descending.

    row_v, row_i: ``[F_A, k]`` values (float32) and B features (int64) of every
    A feature's top k; col_v, col_i: ``[F_B, k]`` the same per B feature.  A
    row or column with fewer than k positive correlations is padded with value
    0 and index -1.  The sparse solver takes the graph and bounds of any
    ``k' <= k`` from them, so one pass over the correlation serves every k'.
    """

    row_v: np.ndarray
    row_i: np.ndarray
    col_v: np.ndarray
    col_i: np.ndarray

    @property
    def k(self) -> int:
        return self.row_v.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_v), len(self.col_v)

    def graph(self, k: int | None = None) -> sp.csr_matrix:
        """CSR ``[F_A, F_B]``: positive correlations among the top-k of their row or of their column."""
        k = self.k if k is None else min(k, self.k)
        F_A, F_B = self.shape
        r = np.concatenate([np.repeat(np.arange(F_A), k), self.col_i[:, :k].ravel()])
        c = np.concatenate([self.row_i[:, :k].ravel(), np.repeat(np.arange(F_B), k)])
        v = np.concatenate([self.row_v[:, :k].ravel(), self.col_v[:, :k].ravel()])
        keep = (r >= 0) & (c >= 0) & (v > 0)
        return from_entries(r[keep], c[keep], v[keep], (F_A, F_B))

    def bounds(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``([F_A], [F_B])`` float64 k-th largest positive correlation per row and column (0: fewer than k).

        Every positive correlation outside ``graph(k)`` is at most the smaller of its row's and column's bound.
        """
        k = self.k if k is None else min(k, self.k)
        return self.row_v[:, k - 1].astype(np.float64), self.col_v[:, k - 1].astype(np.float64)


def top_lists(rows: CorrRows, k: int) -> TopLists:
    """Top-k positive correlations per row and column, in one pass over the co-activations of ``rows``.

    The kernel keeps a running top-k heap per row and per column as it goes
    (``coact.CorrRows.top``); no correlation block is ever written.
    """
    return TopLists(*rows.top(k))


def from_entries(r: np.ndarray, c: np.ndarray, v: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR of the (row, col, value) entries, each pair once (the first occurrence wins)."""
    _, first = np.unique(np.asarray(r, np.int64) * shape[1] + c, return_index=True)
    return sp.csr_matrix((np.asarray(v)[first].astype(np.float64), (r[first], c[first])), shape=shape)


def topk_candidates(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats, k: int) -> sp.csr_matrix:
    """Positive correlations among the top-k of their row or of their column (CSR ``[F_A, F_B]``), in one pass."""
    return top_lists(corr_rows(XA, XB, st), k).graph()
