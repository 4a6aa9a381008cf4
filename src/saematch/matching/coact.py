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

from dataclasses import dataclass

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def _corr_rows(a_ptr, a_units, a_vals, b_ptr, b_idx, b_vals, rows, n, mu_a, inv_a, mu_b, inv_b, out):  # pragma: no cover
    F_B = out.shape[1]
    for r in prange(len(rows)):
        a = rows[r]
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


@dataclass(frozen=True)
class Side:
    """One layer's activations as the kernel reads them, built once per layer and shared by all its pairs.

    As side A (``Side.a``): CSC, ``ptr`` over features ``[F + 1]``, ``idx`` the units.
    As side B (``Side.b``): CSR, ``ptr`` over units ``[N + 1]``, ``idx`` the features.
    ``mu``: ``[F]`` means; ``inv``: ``[F]`` 1/std, 0 for excluded features (their correlations are NaN).
    """

    ptr: np.ndarray
    idx: np.ndarray
    vals: np.ndarray
    mu: np.ndarray
    inv: np.ndarray
    n_units: int

    @classmethod
    def a(cls, X, mu, sd, valid) -> "Side":
        return cls._of(X.tocsc(), X.shape[0], mu, sd, valid)

    @classmethod
    def b(cls, X, mu, sd, valid) -> "Side":
        return cls._of(X.tocsr(), X.shape[0], mu, sd, valid)

    @classmethod
    def _of(cls, M, n_units, mu, sd, valid) -> "Side":
        return cls(M.indptr.astype(np.int64), M.indices.astype(np.int32), M.data.astype(np.float32),
                   np.asarray(mu, np.float64), _inverse(sd, valid), int(n_units))

    @property
    def n_features(self) -> int:
        return len(self.mu)


class CorrRows:
    """Correlation rows of A's features against all of B's, from sparse activations.

    ``XA``, ``XB``: ``[N, F_A]`` and ``[N, F_B]`` activations (scipy sparse);
    ``mu``/``sd``: per-feature means and standard deviations; ``valid``: features
    with a defined correlation (others give NaN).  Layouts are converted once
    (or given ready-made with :meth:`of_sides`).
    """

    def __init__(self, XA, XB, mu_a, sd_a, valid_a, mu_b, sd_b, valid_b):
        self._init(Side.a(XA, mu_a, sd_a, valid_a), Side.b(XB, mu_b, sd_b, valid_b))

    @classmethod
    def of_sides(cls, a: Side, b: Side) -> "CorrRows":
        self = cls.__new__(cls)
        self._init(a, b)
        return self

    def _init(self, a: Side, b: Side) -> None:
        if a.n_units != b.n_units:
            raise ValueError(f"the two sides cover different units ({a.n_units} vs {b.n_units})")
        self.n = float(a.n_units)
        self.shape = (a.n_features, b.n_features)
        self._a, self._b = (a.ptr, a.idx, a.vals), (b.ptr, b.idx, b.vals)
        self._mu_a, self._inv_a, self._mu_b, self._inv_b = a.mu, a.inv, b.mu, b.inv

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        """``[hi - lo, F_B]`` float32 correlations of A features ``lo:hi``."""
        return self.rows(np.arange(lo, hi, dtype=np.int64))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """``[len(idx), F_B]`` float32 correlations of the A features ``idx``."""
        idx = np.ascontiguousarray(idx, np.int64)
        out = np.empty((len(idx), self.shape[1]), np.float32)
        _corr_rows(*self._a, *self._b, idx, self.n, self._mu_a, self._inv_a, self._mu_b, self._inv_b, out)
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

