"""Pairing features: one-to-one (Hungarian), many-to-one (max), mutual best.

The one-to-one objective is the maximum total *positive* correlation: a
feature may stay unmatched (score 0) rather than take a negative partner.  This
equals ``linear_sum_assignment`` on ``max(C, 0)``, and handles F_A != F_B.

Beyond ``dense_limit`` features the problem is solved on a sparse candidate
graph (top-K positive correlations per row and column) with
``scipy.sparse.csgraph.min_weight_full_bipartite_matching``, plus dummy
"unmatched" nodes of score 0 so a full matching always exists.  Optimality is
then *certified*: shortest-path potentials (``duals.py``) on the residual graph give LP duals
that are feasible and tight on the candidate graph; every positive correlation
outside it is streamed once and checked against them.  Violations widen the
candidate set and the problem is solved again; any remaining violation bounds
the optimality gap (``gap``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from saematch.matching.duals import duals, violations

log = logging.getLogger(__name__)

BASE = 2.0  # cost = BASE - weight keeps every edge cost positive (weights are correlations <= 1)


@dataclass(frozen=True)
class Assignment:
    """Matched pairs and how they were found.

    rows, cols: A and B feature indices of each pair (``[P]``); values: their correlation.
    objective: total correlation of the pairs.  solver: 'dense-lsa', 'sparse-lapjvsp',
    'max' or 'mutual'.  gap: upper bound on (optimum - objective); 0 when certified.
    candidates_k: top-K used by the sparse solver (0 for dense).  rounds: sparse re-solves.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    solver: str
    gap: float = 0.0
    candidates_k: int = 0
    rounds: int = 0

    @property
    def objective(self) -> float:
        return float(self.values.sum())


def hungarian_dense(C: np.ndarray) -> Assignment:
    """Exact one-to-one matching on a dense ``[F_A, F_B]`` correlation (NaN = excluded)."""
    W = np.nan_to_num(C, nan=0.0)
    W = np.clip(W, 0.0, None)
    r, c = linear_sum_assignment(W, maximize=True)
    keep = W[r, c] > 0
    return Assignment(r[keep], c[keep], C[r[keep], c[keep]].astype(np.float64), "dense-lsa")


def _augmented(G: sp.csr_matrix) -> sp.csr_matrix:
    """Cost matrix ``[F_A + F_B, F_B + F_A]`` with dummy 'unmatched' nodes."""
    F_A, F_B = G.shape
    coo = G.tocoo()
    real = sp.coo_matrix((BASE - coo.data, (coo.row, coo.col)), shape=(F_A + F_B, F_B + F_A))
    row_dummy = sp.coo_matrix((np.full(F_A, BASE), (np.arange(F_A), F_B + np.arange(F_A))), shape=real.shape)
    col_dummy = sp.coo_matrix((np.full(F_B, BASE), (F_A + np.arange(F_B), np.arange(F_B))), shape=real.shape)
    # dummy-dummy edges mirror the real ones, so any real pair leaves a matchable dummy pair
    dd = sp.coo_matrix((np.full(coo.nnz, BASE), (F_A + coo.col, F_B + coo.row)), shape=real.shape)
    return (real + row_dummy + col_dummy + dd).tocsr()


def hungarian_sparse(
    G: sp.csr_matrix, corr_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]] | None = None,
    candidates_k: int = 0, max_rounds: int = 4, tol: float = 1e-7,
) -> Assignment:
    """One-to-one matching on the candidate graph ``G`` (positive correlations), certified if possible.

    ``corr_blocks`` re-streams the full correlation as (row offset, dense
    ``[rows, F_B]`` block, NaN = excluded); only its positive entries matter.
    Without it no certificate is attempted and ``gap`` is NaN.
    """
    F_A, F_B = G.shape
    G = G.tocsr()
    gap = float("nan")
    for rnd in range(1, max_rounds + 1):
        cost = _augmented(G)
        row_ind, col_ind = min_weight_full_bipartite_matching(cost)
        match_col = np.empty(cost.shape[0], np.int64)
        match_col[row_ind] = col_ind
        r = np.arange(F_A)
        c = match_col[:F_A]
        real = c < F_B
        r, c = r[real], c[real]
        vals = np.asarray(G[r, c]).ravel()
        if corr_blocks is None:
            break
        uv = duals(cost, match_col)
        if uv is None:
            log.warning("sparse assignment: no optimality certificate (dual potentials did not settle); gap unknown")
            break
        u, v = uv
        add_r, add_c, add_v, delta = [], [], [], np.zeros(F_A)
        for lo, C in corr_blocks():
            bi, bj, worst = violations(C, lo, u, v, F_A, BASE, tol)
            delta[lo:lo + len(C)] = worst
            if len(bi):
                add_r.append(bi), add_c.append(bj), add_v.append(C[bi - lo, bj].astype(np.float64))
        gap = float(delta.sum())
        if gap <= tol or rnd == max_rounds:
            break
        extra = sp.csr_matrix((np.concatenate(add_v), (np.concatenate(add_r), np.concatenate(add_c))), shape=G.shape)
        G = G.maximum(extra).tocsr()
    if not np.isnan(gap) and gap <= tol:
        gap = 0.0
    return Assignment(r, c, vals, "sparse-lapjvsp", gap, candidates_k, rnd)


def _positive(W: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    """Positive entries only: a best match with correlation <= 0 is no match (NaN = excluded)."""
    if sp.issparse(W):
        M = W.tocsr().copy()
        M.data[~(M.data > 0)] = 0
    else:
        M = sp.csr_matrix(np.where(np.nan_to_num(W, nan=0.0) > 0, np.nan_to_num(W, nan=0.0), 0.0))
    M.eliminate_zeros()
    return M


def match_max(W: np.ndarray | sp.spmatrix) -> Assignment:
    """Each B feature to its best A feature (many-to-one), as in Lan et al.

    ``W`` is ``[F_A, F_B]``, dense or sparse; B features with no positive
    correlation stay unmatched.
    """
    M = _positive(W).tocsc()
    cols = np.nonzero(np.diff(M.indptr))[0]
    rows = np.asarray(M[:, cols].argmax(axis=0)).ravel()
    return Assignment(rows, cols, np.asarray(M[rows, cols]).ravel().astype(np.float64), "max")


def match_mutual(W: np.ndarray | sp.spmatrix) -> Assignment:
    """Pairs that are each other's best (positive) match."""
    M = _positive(W)
    has_row = np.diff(M.indptr) > 0
    best_b = np.asarray(M.argmax(axis=1)).ravel()
    Mc = M.tocsc()
    best_a = np.asarray(Mc.argmax(axis=0)).ravel()
    rows = np.nonzero(has_row)[0]
    rows = rows[best_a[best_b[rows]] == rows]
    cols = best_b[rows]
    return Assignment(rows, cols, np.asarray(M[rows, cols]).ravel().astype(np.float64), "mutual")
