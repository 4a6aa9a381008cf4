"""Pearson correlation between every feature of SAE A and every feature of SAE B.

From sufficient statistics over the same N units: per-feature sums and sums of
squares, and the sparse cross-product ``S = X_A^T X_B`` (scipy CSR), so the
work is proportional to co-activations, never N x F_A x F_B:

    corr_ij = (S_ij / N - mu_i nu_j) / (sigma_i tau_j)

SAE activations are non-negative, so a pair that never co-fires has
``corr <= 0``: every positive correlation lies on the sparsity pattern of S.
Features that never fire (sigma = 0) have undefined correlation and are
excluded (their rows/columns are NaN in dense output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from saematch.errors import SaematchError
from saematch.features import FeatureStats


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
    return CorrStats(FeatureStats.of(XA), FeatureStats.of(XB), XA.shape[0])


def cross_product(XA: sp.csr_matrix, XB: sp.csr_matrix, rows: slice | None = None, chunk: int = 65536) -> sp.csr_matrix:
    """``X_A[:, rows]^T X_B`` as CSR, accumulated over unit chunks (float64)."""
    XAc = XA if rows is None else XA[:, rows]
    S = None
    for s in range(0, XA.shape[0], chunk):
        part = (XAc[s:s + chunk].T.tocsr().astype(np.float64) @ XB[s:s + chunk].astype(np.float64)).tocsr()
        S = part if S is None else S + part
    return S


def _corr_values(S: sp.csr_matrix, st: CorrStats, row_offset: int = 0) -> sp.csr_matrix:
    """Correlation on S's sparsity pattern (rows shifted by ``row_offset``)."""
    S = S.tocoo()
    i, j = S.row + row_offset, S.col
    n = st.n_units
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = (S.data / n - st.a.mean[i] * st.b.mean[j]) / (st.a.std[i] * st.b.std[j])
    ok = st.valid_a[i] & st.valid_b[j]
    return sp.csr_matrix((vals[ok], (S.row[ok], j[ok])), shape=S.shape)


def dense_corr(XA: sp.csr_matrix, XB: sp.csr_matrix) -> tuple[np.ndarray, CorrStats]:
    """Full ``[F_A, F_B]`` float32 correlation; NaN for excluded (dead/constant) features."""
    st = check_pair(XA, XB)
    S = cross_product(XA, XB).toarray()
    n = st.n_units
    with np.errstate(divide="ignore", invalid="ignore"):
        C = (S / n - np.outer(st.a.mean, st.b.mean)) / np.outer(st.a.std, st.b.std)
    C[~st.valid_a] = np.nan
    C[:, ~st.valid_b] = np.nan
    return C.astype(np.float32), st


def positive_blocks(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats, block: int = 2048) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(row_offset, C_block)`` with the positive correlations of A-feature blocks (CSR).

    Only co-firing pairs can correlate positively, so each block holds every
    positive entry of its rows; memory is bounded by one block's co-activations.
    """
    XAc = XA.tocsc()
    for lo in range(0, XA.shape[1], block):
        hi = min(lo + block, XA.shape[1])
        C = _corr_values(cross_product(XAc[:, lo:hi].tocsr(), XB), st)
        C.data[C.data <= 0] = 0
        C.eliminate_zeros()
        yield lo, C


def _row_topk(C: sp.csr_matrix, k: int) -> np.ndarray:
    """Entry positions (into C.data) of each row's k largest values."""
    keep = []
    for r in range(C.shape[0]):
        a, b = C.indptr[r], C.indptr[r + 1]
        keep.append(np.arange(a, b) if b - a <= k else np.argpartition(-C.data[a:b], k - 1)[:k] + a)
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def topk_candidates(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats, k: int) -> sp.csr_matrix:
    """Positive correlations that are among the top-k of their row or of their column (CSR ``[F_A, F_B]``).

    Two passes over A-feature blocks: the first keeps row top-k and the running
    k-th best value of every column; the second adds entries reaching it.
    """
    F_A, F_B = XA.shape[1], XB.shape[1]
    col_best = np.full((k, F_B), -np.inf)
    rows, cols, vals = [], [], []
    for lo, C in positive_blocks(XA, XB, st):
        coo_rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
        sel = _row_topk(C, k)
        rows.append(coo_rows[sel] + lo), cols.append(C.indices[sel]), vals.append(C.data[sel])
        Cc = C.tocsc()
        for j in np.nonzero(np.diff(Cc.indptr))[0]:
            merged = np.concatenate([col_best[:, j], Cc.data[Cc.indptr[j]:Cc.indptr[j + 1]]])
            col_best[:, j] = -np.sort(-merged)[:k]
    thresh = col_best[-1]
    for lo, C in positive_blocks(XA, XB, st):
        coo = C.tocoo()
        m = coo.data >= thresh[coo.col]
        rows.append(coo.row[m] + lo), cols.append(coo.col[m]), vals.append(coo.data[m])
    if not rows:
        return sp.csr_matrix((F_A, F_B))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    _, first = np.unique(r.astype(np.int64) * F_B + c, return_index=True)
    return sp.csr_matrix((v[first], (r[first], c[first])), shape=(F_A, F_B))
