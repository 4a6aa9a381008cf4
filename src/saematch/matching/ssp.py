"""Min-cost perfect matching by successive shortest paths, warm-startable from duals.

scipy's ``min_weight_full_bipartite_matching`` (LAPJVsp) always starts from
scratch and returns no duals.  When the certificate finds correlations that
break the duals and adds them to the candidate graph, the next solve differs
from the last one in a few thousand edges, yet scipy pays the whole solve
again (20-40 s at 16k x 16k on hard instances).  Here the last solve's duals
and matching are the starting point instead:

- a row with a new edge of negative reduced cost ``c - u - v`` has its dual
  lowered to its smallest ``c - v`` (feasible again) and loses its partner if
  the edge to it is no longer tight;
- every free row is then matched by one Dijkstra search over reduced costs
  (indexed binary heap over the columns, touching only the part of the graph
  it explores), and the duals are updated as in the Hungarian method, so that
  they stay feasible on every edge and tight on the matching.

The result is optimal on the graph, and its duals are the certificate's
(``duals.duals`` is not needed).  Rows are augmented in order, so the result
is deterministic.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit


@njit(cache=True, inline="always")
def _sift_up(heap, pos, key, p):  # pragma: no cover - compiled
    x = heap[p]
    while p > 0:
        q = (p - 1) >> 1
        if key[heap[q]] <= key[x]:
            break
        heap[p] = heap[q]
        pos[heap[p]] = p
        p = q
    heap[p] = x
    pos[x] = p


@njit(cache=True, inline="always")
def _pop(heap, pos, key, size):  # pragma: no cover - compiled
    top = heap[0]
    pos[top] = -1
    size -= 1
    if size > 0:
        x = heap[size]
        p = 0
        while True:
            c = 2 * p + 1
            if c >= size:
                break
            if c + 1 < size and key[heap[c + 1]] < key[heap[c]]:
                c += 1
            if key[heap[c]] >= key[x]:
                break
            heap[p] = heap[c]
            pos[heap[p]] = p
            p = c
        heap[p] = x
        pos[x] = p
    return top, size


@njit(cache=True)
def _augment(indptr, indices, cost, u, v, row_of_col, col_of_row, free_rows):  # pragma: no cover - compiled
    n_cols = len(v)
    dist = np.full(n_cols, np.inf)
    pred = np.full(n_cols, -1, np.int64)
    final = np.zeros(n_cols, np.bool_)
    heap = np.empty(n_cols, np.int64)
    pos = np.full(n_cols, -1, np.int64)
    touched = np.empty(n_cols, np.int64)
    for r in free_rows:
        nt, size, sink, i, di = 0, 0, -1, r, 0.0
        while True:
            for e in range(indptr[i], indptr[i + 1]):  # relax the edges of row i, reached at distance di
                j = indices[e]
                if final[j]:
                    continue
                nd = di + max(cost[e] - u[i] - v[j], 0.0)
                if nd < dist[j]:
                    if dist[j] == np.inf:
                        touched[nt] = j
                        nt += 1
                    dist[j], pred[j] = nd, i
                    if pos[j] < 0:
                        heap[size] = j
                        pos[j] = size
                        size += 1
                    _sift_up(heap, pos, dist, pos[j])
            if size == 0:
                return False
            j, size = _pop(heap, pos, dist, size)
            final[j] = True
            if row_of_col[j] < 0:
                sink = j
                break
            i, di = row_of_col[j], dist[j]
        D = dist[sink]
        u[r] += D
        for t in range(nt):
            j = touched[t]
            if final[j] and j != sink:
                u[row_of_col[j]] += D - dist[j]
                v[j] -= D - dist[j]
        j = sink
        while True:  # flip the path
            i = pred[j]
            nxt = col_of_row[i]
            col_of_row[i], row_of_col[j] = j, i
            if i == r:
                break
            j = nxt
        for t in range(nt):
            j = touched[t]
            dist[j], pred[j], final[j] = np.inf, -1, False
            if pos[j] >= 0:
                pos[j] = -1
    return True


@njit(cache=True)
def _repair(indptr, indices, cost, u, v, row_of_col, col_of_row, eps):  # pragma: no cover - compiled
    """Make the duals feasible again and keep only tight matched edges.

    A row with a negative reduced cost has its dual lowered to its smallest
    ``c - v``; a row whose matched edge is then not tight (or gone) is unmatched.
    """
    for i in range(len(indptr) - 1):
        m, c_match = np.inf, np.inf
        for e in range(indptr[i], indptr[i + 1]):
            m = min(m, cost[e] - v[indices[e]])
            if indices[e] == col_of_row[i]:
                c_match = cost[e]
        if m < u[i] - eps:
            u[i] = m
        j = col_of_row[i]
        if j >= 0 and not abs(c_match - u[i] - v[j]) <= eps:
            col_of_row[i], row_of_col[j] = -1, -1


def solve(cost: sp.csr_matrix, init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
          eps: float = 1e-9, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Min-cost perfect matching of the square ``cost`` (CSR, explicit entries are the edges).

    ``init``: ``(match_col, u, v)`` of an earlier solve on a subgraph of ``cost``
    (same nodes, fewer edges; -1 for unmatched rows, ``inf`` for a row dual to
    be set to its largest feasible value).  Returns ``(match_col, u, v)``: the
    column of every row and duals feasible on every edge (``u_r + v_c <= cost``,
    up to rounding) and tight on the matching; None if no perfect matching
    exists.  ``rows``: augment only these rows (the others stay as they are,
    possibly unmatched), for a solve in phases.
    """
    cost = sp.csr_matrix(cost)
    n = cost.shape[0]
    indptr, indices, data = cost.indptr.astype(np.int64), cost.indices.astype(np.int64), cost.data.astype(np.float64)
    if init is None:
        col_of_row, row_of_col = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        v = np.zeros(n)
        u = np.full(n, np.inf)
    else:
        col_of_row = np.array(init[0], np.int64)
        u, v = np.array(init[1], np.float64), np.array(init[2], np.float64)
        row_of_col = np.full(n, -1, np.int64)
        row_of_col[col_of_row[col_of_row >= 0]] = np.nonzero(col_of_row >= 0)[0]
    _repair(indptr, indices, data, u, v, row_of_col, col_of_row, eps)
    if not np.isfinite(u).all():
        return None
    free = np.nonzero(col_of_row < 0)[0]
    if rows is not None:
        free = free[np.isin(free, rows)]
    if not _augment(indptr, indices, data, u, v, row_of_col, col_of_row, free):
        return None
    return col_of_row, u, v
