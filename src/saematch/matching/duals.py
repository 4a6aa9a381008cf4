"""LP duals of an optimal assignment, from shortest paths in its residual graph.

For a min-cost perfect matching on a sparse bipartite cost graph, let ``d`` be
shortest-path distances in the residual graph (unmatched edges row -> col at
their cost, matched edges col -> row at minus their cost) from a virtual source
joined to every node at cost 0.  Then ``v_c = d[c]`` and
``u_r = cost(r, m(r)) - v[m(r)]`` are dual-feasible (``u_r + v_c <= cost(r, c)``
on every edge) and tight on the matching.  No negative cycle exists because the
matching is optimal, so the distances are finite.

scipy's ``bellman_ford`` runs all n relaxation rounds over every edge here
(98 s at 8k x 8k features with 64 candidates each); the queue-based variant
(Bellman-Ford-Moore / SPFA) below only revisits nodes whose distance changed
and takes well under a second on the same graph.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange


@njit(cache=True)
def _spfa(indptr, indices, weights, eps):  # pragma: no cover - compiled
    n = len(indptr) - 1
    d = np.zeros(n)
    in_queue = np.ones(n, np.bool_)
    queue = np.arange(n + 1)
    head, size, cap = 0, n, n + 1
    pushes = 0
    while size > 0:
        x = queue[head]
        head = (head + 1) % cap
        size -= 1
        in_queue[x] = False
        for e in range(indptr[x], indptr[x + 1]):
            y = indices[e]
            nd = d[x] + weights[e]
            if nd < d[y] - eps:
                d[y] = nd
                if not in_queue[y]:
                    in_queue[y] = True
                    queue[(head + size) % cap] = y
                    size += 1
                    pushes += 1
                    if pushes > n * 64 + 10_000_000:
                        return d, False
    return d, True


def duals(cost: sp.csr_matrix, match_col: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """LP duals (``u`` per row, ``v`` per column) of the perfect matching ``row -> match_col[row]`` on ``cost``.

    None when the shortest paths do not settle within the work cap (then no
    certificate can be given).
    """
    n = cost.shape[0]
    coo = cost.tocoo()
    matched = match_col[coo.row] == coo.col
    src = np.concatenate([coo.row[~matched], n + coo.col[matched]])
    dst = np.concatenate([n + coo.col[~matched], coo.row[matched]])
    w = np.concatenate([coo.data[~matched], -coo.data[matched]]).astype(np.float64)
    g = sp.csr_matrix((w, (src, dst)), shape=(2 * n, 2 * n))
    d, ok = _spfa(g.indptr.astype(np.int64), g.indices.astype(np.int64), g.data, 1e-12)
    if not ok:
        return None
    v = d[n:]
    c_match = np.asarray(cost[np.arange(n), match_col]).ravel()
    return c_match - v[match_col], v


@njit(parallel=True, cache=True, nogil=True)
def _violations(C, rows, u, v, F_A, base, tol, delta, counts, fill, out_c):  # pragma: no cover - compiled
    F_B = C.shape[1]
    for r in prange(len(rows)):
        i = rows[r]
        cnt = 0
        worst_real, worst_mirror = 0.0, 0.0
        for j in range(F_B):
            w = C[r, j]
            if not w > 0:
                continue
            # a new real edge (i, j) costs base - w; its dummy mirror (F_A + j, F_B + i) costs base
            real = u[i] + v[j] - (base - w)
            mirror = u[F_A + j] + v[F_B + i] - base
            if real > tol or mirror > tol:
                if fill:
                    out_c[counts[r] + cnt] = j
                cnt += 1
                worst_real = max(worst_real, real)
                worst_mirror = max(worst_mirror, mirror)
        delta[r] = worst_real + worst_mirror
        if not fill:
            counts[r] = cnt


def violations(C: np.ndarray, lo: int | np.ndarray, u: np.ndarray, v: np.ndarray, F_A: int, base: float, tol: float):
    """Positive entries of the correlation block ``C`` that break dual feasibility.

    ``lo``: the A feature of C's first row (rows ``lo:``), or an array naming
    the A feature of every row.  Returns ``(rows, cols, delta)``: the violating
    entries, and per row of the block the amount ``delta`` by which lowering row
    i's dual (for its real edges) and its dummy column's dual (for the mirrors)
    restores feasibility.  Their sum over all rows bounds the optimality gap.
    """
    C = np.ascontiguousarray(C, np.float32)
    rows = np.arange(lo, lo + len(C)) if np.isscalar(lo) else np.asarray(lo, np.int64)
    delta = np.zeros(len(C))
    counts = np.zeros(len(C), np.int64)
    none = np.zeros(0, np.int64)
    _violations(C, rows, u, v, F_A, base, tol, delta, counts, False, none)
    total = int(counts.sum())
    if total == 0:
        return none, none, delta
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cols = np.empty(total, np.int64)
    _violations(C, rows, u, v, F_A, base, tol, np.zeros(len(C)), offsets, True, cols)
    return np.repeat(rows, counts), cols, delta


def bound_violations(u: np.ndarray, v: np.ndarray, theta_a: np.ndarray, theta_b: np.ndarray, base: float) -> np.ndarray:
    """``[F_A]`` upper bound on ``violations``' delta, per row, from the positive entries *outside* the candidates.

    ``theta_a[i]``/``theta_b[j]``: row i's and column j's k-th largest positive
    correlation (0 when the row or column has fewer than k, so that all of its
    positive entries are candidates; ``correlation.TopLists.bounds``).  An entry
    left out of both top-k lists has ``0 < w <= min(theta_a[i], theta_b[j])``,
    so its real edge breaks dual feasibility by at most
    ``u[i] + v[j] + min(theta_a[i], theta_b[j]) - base`` and its dummy mirror
    by ``u[F_A + j] + v[F_B + i] - base``.  The row maximum over j is taken in
    O(F log F) (columns sorted by their bound), without any correlation.  A
    row whose bound is <= tol holds no violation at all; only the others need
    their exact correlations (``assign.hungarian_sparse`` with ``bounds``).
    """
    F_A, F_B = len(theta_a), len(theta_b)
    out = np.zeros(F_A)
    ok_b = theta_b > 0
    rows = np.nonzero(theta_a > 0)[0]
    if not ok_b.any() or not len(rows):
        return out
    tb, vb = theta_b[ok_b], v[:F_B][ok_b]
    order = np.argsort(tb, kind="stable")
    tb, vb = tb[order], vb[order]
    below = np.maximum.accumulate(vb + tb)  # best v_j + theta_j over columns with theta_j <= t
    above = np.maximum.accumulate(vb[::-1])[::-1]  # best v_j over columns with theta_j >= t
    t = theta_a[rows]
    p = np.searchsorted(tb, t, side="left")  # columns [0, p) have theta_j < t
    best = np.full(len(rows), -np.inf)
    has_above = p < len(tb)
    best[has_above] = t[has_above] + above[p[has_above]]
    has_below = p > 0
    best[has_below] = np.maximum(best[has_below], below[p[has_below] - 1])
    real = u[rows] + best - base
    mirror = v[F_B + rows] + u[F_A:][ok_b].max() - base
    out[rows] = np.clip(real, 0, None) + np.clip(mirror, 0, None)
    return out
