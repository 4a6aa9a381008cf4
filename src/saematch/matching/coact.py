"""Co-activation kernel: rows of the A x B feature correlation, computed from sparse activations.

For each A feature ``a`` (a row), the units where it fires are read from
``X_A`` in CSC order, and each such unit's active B features are added into a
dense float64 accumulator of length ``F_B``:

    acc[b] = sum over units u of X_A[u, a] * X_B[u, b]

That is N * k_A * k_B multiply-adds in all (the co-activations), never
N * F_A * F_B, and the accumulator (128 KB at F_B = 16k) stays in cache.  The
row is then turned into Pearson correlations from the per-feature means and
standard deviations.  Rows are split over cores (numba ``prange``).

scipy's CSR product computes the same sums, but it builds a sorted sparse
result with one hash/linked-list pass per row and is single-threaded: 15 s
for 16k x 16k features over 100k units, against about 1 s here
(``bench/match.py``).  Compiled on first use and cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def _corr_rows(a_ptr, a_units, a_vals, b_ptr, b_idx, b_vals, lo, hi, n, mu_a, inv_a, mu_b, inv_b, out):  # pragma: no cover
    F_B = out.shape[1]
    for r in prange(hi - lo):
        a = lo + r
        if inv_a[a] == 0.0:
            for j in range(F_B):
                out[r, j] = np.nan
            continue
        acc = np.zeros(F_B)
        for t in range(a_ptr[a], a_ptr[a + 1]):
            u = a_units[t]
            va = np.float64(a_vals[t])
            for s in range(b_ptr[u], b_ptr[u + 1]):
                acc[b_idx[s]] += va * b_vals[s]
        m, ia = mu_a[a], inv_a[a]
        for j in range(F_B):
            if inv_b[j] == 0.0:
                out[r, j] = np.nan
            else:
                out[r, j] = (acc[j] / n - m * mu_b[j]) * ia * inv_b[j]


class CorrRows:
    """Correlation rows of A's features against all of B's, from sparse activations.

    ``XA``, ``XB``: ``[N, F_A]`` and ``[N, F_B]`` activations (scipy sparse);
    ``mu``/``sd``: per-feature means and standard deviations; ``valid``: features
    with a defined correlation (others give NaN).  Layouts are converted once.
    """

    def __init__(self, XA, XB, mu_a, sd_a, valid_a, mu_b, sd_b, valid_b):
        A, B = XA.tocsc(), XB.tocsr()
        self.n = float(XA.shape[0])
        self.shape = (XA.shape[1], XB.shape[1])
        self._a = (A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data.astype(np.float32))
        self._b = (B.indptr.astype(np.int64), B.indices.astype(np.int32), B.data.astype(np.float32))
        self._mu_a, self._inv_a = np.asarray(mu_a, np.float64), _inverse(sd_a, valid_a)
        self._mu_b, self._inv_b = np.asarray(mu_b, np.float64), _inverse(sd_b, valid_b)

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        """``[hi - lo, F_B]`` float32 correlations of A features ``lo:hi``."""
        out = np.empty((hi - lo, self.shape[1]), np.float32)
        _corr_rows(*self._a, *self._b, lo, hi, self.n, self._mu_a, self._inv_a, self._mu_b, self._inv_b, out)
        return out


def _inverse(sd: np.ndarray, valid: np.ndarray) -> np.ndarray:
    sd = np.asarray(sd, np.float64)
    ok = np.asarray(valid, bool) & (sd > 0)
    return np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)


@njit(cache=True, nogil=True)
def _heap_offer(vals, idx, v, i):  # pragma: no cover - compiled
    """Keep the k largest in the min-heap ``vals``/``idx`` (root = smallest kept)."""
    if not v > vals[0]:
        return
    k = len(vals)
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= k:
            break
        if c + 1 < k and vals[c + 1] < vals[c]:
            c += 1
        if vals[c] >= v:
            break
        vals[pos], idx[pos] = vals[c], idx[c]
        pos = c
    vals[pos], idx[pos] = v, i


@njit(parallel=True, cache=True, nogil=True)
def _offer_block(C, lo, row_v, row_i, col_v, col_i):  # pragma: no cover - compiled
    rows, F_B = C.shape
    for r in prange(rows):
        for j in range(F_B):
            _heap_offer(row_v[lo + r], row_i[lo + r], C[r, j], j)
    n_chunks = (F_B + 255) // 256
    for t in prange(n_chunks):
        for r in range(rows):
            for j in range(t * 256, min(F_B, t * 256 + 256)):
                _heap_offer(col_v[j], col_i[j], C[r, j], lo + r)


class TopPositive:
    """Running top-k *positive* entries of every row and every column of a ``[F_A, F_B]`` matrix fed in row blocks.

    ``offer(lo, C)`` takes rows ``lo:lo + len(C)``; NaN and values <= 0 never
    enter.  ``entries()`` returns the union as ``(rows, cols, values)``.
    """

    def __init__(self, F_A: int, F_B: int, k: int):
        self.k = k
        self.row_v = np.zeros((F_A, k), np.float32)
        self.row_i = np.full((F_A, k), -1, np.int64)
        self.col_v = np.zeros((F_B, k), np.float32)
        self.col_i = np.full((F_B, k), -1, np.int64)

    def offer(self, lo: int, C: np.ndarray) -> None:
        _offer_block(np.ascontiguousarray(C, np.float32), lo, self.row_v, self.row_i, self.col_v, self.col_i)

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        F_A, F_B = len(self.row_v), len(self.col_v)
        r = np.concatenate([np.repeat(np.arange(F_A), self.k), self.col_i.ravel()])
        c = np.concatenate([self.row_i.ravel(), np.repeat(np.arange(F_B), self.k)])
        v = np.concatenate([self.row_v.ravel(), self.col_v.ravel()])
        keep = (r >= 0) & (c >= 0) & (v > 0)
        return r[keep], c[keep], v[keep]
