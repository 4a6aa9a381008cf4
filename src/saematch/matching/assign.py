"""Pairing features: one-to-one (Hungarian), many-to-one (max), mutual best.

The one-to-one objective is the maximum total *positive* correlation: a
feature may stay unmatched (score 0) rather than take a negative partner.  This
equals ``linear_sum_assignment`` on ``max(C, 0)``, and handles F_A != F_B.

Beyond ``dense_limit`` features the problem is solved on a sparse candidate
graph (top-K positive correlations per row and column) with
``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` or the warm-started
``ssp.solve`` (its first solve in two phases, ``_cold_ssp``), plus dummy
"unmatched" nodes of score 0 so a full matching always exists.  Optimality is then *certified*: LP duals (shortest-path
potentials on the residual graph, ``duals.py``, or the solver's own) are
checked feasible and tight on the candidate graph, and every positive
correlation outside it is checked against them: either streamed once, or
bounded by the candidates' k-th values (``duals.bound_violations``) with only
the rows the bound cannot clear computed exactly.  Violations widen the
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

from saematch.matching.duals import bound_violations, duals, violations
from saematch.matching.ssp import solve as ssp_solve

log = logging.getLogger(__name__)

BASE = 2.0  # cost = BASE - weight keeps every edge cost positive (weights are correlations <= 1)
ROUNDING = 1e-10  # dual (in)feasibility below this is float64 rounding of costs near BASE


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
    bounds: tuple[np.ndarray, np.ndarray] | None = None, corr_rows: Callable[[np.ndarray], np.ndarray] | None = None,
    solver: str = "lapjvsp", known: sp.csr_matrix | None = None,
) -> Assignment:
    """One-to-one matching on the candidate graph ``G`` (positive correlations), certified if possible.

    Two ways to certify:

    - ``corr_blocks`` re-streams the full correlation as (row offset, dense
      ``[rows, F_B]`` block, NaN = excluded); only its positive entries matter.
    - ``bounds``, the ``([F_A], [F_B])`` k-th largest candidate of every row and
      column (``TopLists.bounds``), proves most rows feasible without any
      correlation (``duals.bound_violations``); ``corr_rows(idx)`` then gives
      the exact ``[len(idx), F_B]`` rows of the rest.  Without ``corr_rows`` the
      bound itself enters the gap.  ``known``: exact positive correlations
      beyond ``G`` (e.g. ``TopLists.graph()`` at a larger k, whose ``bounds()``
      are then the ones to give); they are checked as they are, so the
      bounds only need to cover what lies outside them.

    With neither no certificate is attempted and ``gap`` is NaN.  ``solver``:
    'lapjvsp' (scipy, from scratch every round; duals from ``duals.duals``) or
    'ssp' (``ssp.solve``: each round starts from the last one's duals and
    matching, and returns its own duals).  Either way the duals are checked on
    every candidate edge and on the matching before they certify anything.
    """
    if solver not in ("lapjvsp", "ssp"):
        raise ValueError(f"unknown sparse solver {solver!r}")
    F_A, F_B = G.shape
    G = G.tocsr()
    gap, state = float("nan"), None
    for rnd in range(1, max_rounds + 1):
        cost = _augmented(G)
        if solver == "ssp":
            state = ssp_solve(cost, state) if state is not None else _cold_ssp(cost, F_A, F_B)
            if state is None:
                raise RuntimeError("sparse assignment: no perfect matching on the augmented graph")
            match_col = state[0]
        else:
            row_ind, col_ind = min_weight_full_bipartite_matching(cost)
            match_col = np.empty(cost.shape[0], np.int64)
            match_col[row_ind] = col_ind
        r = np.arange(F_A)
        c = match_col[:F_A]
        real = c < F_B
        r, c = r[real], c[real]
        vals = np.asarray(G[r, c]).ravel()
        if corr_blocks is None and bounds is None:
            break
        uv = state[1:] if solver == "ssp" else duals(cost, match_col)
        if uv is None:
            log.warning("sparse assignment: no optimality certificate (dual potentials did not settle); gap unknown")
            break
        u, v = uv
        if bounds is not None:
            delta, extra = _bounded_check(u, v, bounds, known, corr_rows, F_A, tol)
        else:
            delta, extra = _streamed_check(u, v, corr_blocks, F_A, tol)
        gap = float(delta.sum()) + _dual_slack(cost, match_col, u, v)
        if gap <= tol or rnd == max_rounds or extra is None:
            break
        G = G.maximum(sp.csr_matrix((extra[2], (extra[0], extra[1])), shape=G.shape)).tocsr()
    if not np.isnan(gap) and gap <= tol:
        gap = 0.0
    return Assignment(r, c, vals, f"sparse-{solver}", gap, candidates_k, rnd)


def _cold_ssp(cost: sp.csr_matrix, F_A: int, F_B: int):
    """First solve of the augmented graph: the real rows, then the dummy rows placed by mirroring.

    The real rows alone decide the optimum; each dummy row then has an obvious
    partner (the mirror of its column's pair, or its own real column when that
    stayed unmatched), tight in almost every case.  Left to the search, the
    dummy rows meet long ties of zero reduced cost and take 100x the time of
    the real ones.  ``ssp.solve`` sets their duals, drops the few mirrors
    that are not tight and augments those rows.
    """
    state = ssp_solve(cost, rows=np.arange(F_A))
    if state is None:
        return None
    match_col, u, v = state
    real = np.nonzero(match_col[:F_A] < F_B)[0]
    taken = np.zeros(F_B, bool)
    taken[match_col[real]] = True
    free_cols = np.nonzero(~taken)[0]
    match_col[F_A + match_col[real]] = F_B + real  # the dummy row of a matched column mirrors its pair
    match_col[F_A + free_cols] = free_cols  # an unmatched real column takes its own dummy row
    u[F_A:] = np.inf
    return ssp_solve(cost, (match_col, u, v))


def _dual_slack(cost: sp.csr_matrix, match_col: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """What the duals lack on the solved graph itself: infeasibility per row plus slack on the matching.

    0 (up to rounding) for an optimal solve; anything else only widens the proven gap.
    """
    coo = cost.tocoo()
    infeas = np.zeros(cost.shape[0])
    np.maximum.at(infeas, coo.row, u[coo.row] + v[coo.col] - coo.data)
    slack = np.abs(np.asarray(cost[np.arange(cost.shape[0]), match_col]).ravel() - u - v[match_col])
    return float(infeas[infeas > ROUNDING].sum() + slack[slack > ROUNDING].sum())


ROWS_PER_CHECK = 256  # exact correlation rows computed at once by the bounded certificate


def _streamed_check(u, v, corr_blocks, F_A, tol):
    """Every positive correlation checked against the duals: ``(delta [F_A], violating entries or None)``."""
    add_r, add_c, add_v, delta = [], [], [], np.zeros(F_A)
    for lo, C in corr_blocks():
        bi, bj, worst = violations(C, lo, u, v, F_A, BASE, tol)
        delta[lo:lo + len(C)] = worst
        if len(bi):
            add_r.append(bi), add_c.append(bj), add_v.append(C[bi - lo, bj].astype(np.float64))
    return delta, _joined(add_r, add_c, add_v)


def _bounded_check(u, v, bounds, known, corr_rows, F_A, tol):
    """The bounds clear most rows; entries in ``known`` are checked as they are; the rest are computed exactly."""
    bound = bound_violations(u, v, bounds[0], bounds[1], BASE)
    suspect = np.nonzero(bound > tol)[0]
    delta = np.zeros(F_A)
    add_r, add_c, add_v = [], [], []
    if known is not None:
        kr, kc, kv, kdelta = _known_violations(known, u, v, tol)
        delta += kdelta
        fine = np.ones(F_A, bool)
        fine[suspect] = False
        if corr_rows is None:
            delta[suspect] += bound[suspect]
        keep = fine[kr] | (corr_rows is None)  # a suspect row computed exactly brings its own violators
        add_r.append(kr[keep]), add_c.append(kc[keep]), add_v.append(kv[keep])
    elif corr_rows is None:
        delta[suspect] = bound[suspect]
    if corr_rows is not None:
        for s in range(0, len(suspect), ROWS_PER_CHECK):
            idx = suspect[s:s + ROWS_PER_CHECK]
            C = corr_rows(idx)
            bi, bj, worst = violations(C, idx, u, v, F_A, BASE, tol)
            delta[idx] = worst
            if len(bi):
                add_r.append(bi), add_c.append(bj), add_v.append(C[np.searchsorted(idx, bi), bj].astype(np.float64))
    return delta, _joined(add_r, add_c, add_v)


def _known_violations(known: sp.csr_matrix, u, v, tol):
    """Violating entries of ``known`` (rows, cols, values) and their delta per row (as ``duals.violations``)."""
    F_A, F_B = known.shape
    coo = known.tocoo()
    r, c, w = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)
    real = u[r] + v[c] - (BASE - w)
    mirror = u[F_A + c] + v[F_B + r] - BASE
    bad = (w > 0) & ((real > tol) | (mirror > tol))
    worst_real, worst_mirror = np.zeros(F_A), np.zeros(F_A)
    np.maximum.at(worst_real, r[bad], real[bad])
    np.maximum.at(worst_mirror, r[bad], mirror[bad])
    return r[bad], c[bad], w[bad], worst_real + worst_mirror


def _joined(add_r, add_c, add_v):
    if not sum(len(x) for x in add_r):
        return None
    return np.concatenate(add_r), np.concatenate(add_c), np.concatenate(add_v)


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
