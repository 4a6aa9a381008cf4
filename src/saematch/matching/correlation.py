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
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from saematch.errors import SaematchError
from saematch.features.encode import FeatureStats
from saematch.matching.coact import CorrRows, TopPositive


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


BLOCK_ELEMS = 1 << 22  # correlation entries per block (16 MB of float32)


def corr_blocks(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_offset, C[rows, F_B])`` float32 correlation blocks over all A features (NaN = excluded)."""
    rows = CorrRows(XA, XB, st.a.mean, st.a.std, st.valid_a, st.b.mean, st.b.std, st.valid_b)
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


def topk_candidates(XA: sp.csr_matrix, XB: sp.csr_matrix, st: CorrStats, k: int) -> sp.csr_matrix:
    """Positive correlations among the top-k of their row or of their column (CSR ``[F_A, F_B]``).

    One pass over the correlation blocks, keeping a running top-k heap per row
    and per column (compiled, ``coact.TopPositive``).
    """
    F_A, F_B = XA.shape[1], XB.shape[1]
    top = TopPositive(F_A, F_B, k)
    for lo, C in corr_blocks(XA, XB, st):
        top.offer(lo, C)
    r, c, v = top.entries()
    _, first = np.unique(r * F_B + c, return_index=True)
    return sp.csr_matrix((v[first].astype(np.float64), (r[first], c[first])), shape=(F_A, F_B))
