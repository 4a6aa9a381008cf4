"""Co-activation kernels: rows of the A x B feature correlation, and every row's and column's top k, in one pass.

For each A feature ``a`` (a row), the units where it fires are read from
``X_A`` in CSC order, and each such unit's active B features are added into a
dense float64 accumulator of length ``F_B``:

    acc[b] = sum over units u of X_A[u, a] * X_B[u, b]

That is N * k_A * k_B multiply-adds in all (the co-activations), never
N * F_A * F_B, and the accumulator (128 KB at F_B = 16k) stays in cache.  The
row is then turned into Pearson correlations from the per-feature means and
standard deviations.

The units of one A feature are scattered over all of B's rows (256 MB at 1M
units, k = 32), so without help every unit costs a few trips to memory: the
loop asks for the B row a few units ahead with a software prefetch
(``llvm.prefetch``), which on 2 cores made the pass about 3x faster.

:func:`CorrRows.top` never writes a correlation block: each finished row
offers its entries straight to a running top-k heap of its own and to one of
every column (per thread, merged at the end), so a single pass over the
co-activations gives everything the certified solver reads.  Both kernels form
each correlation with the same float64 expression, so an entry is bit for bit
the same whichever of them produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_PREFETCH = "llvm.prefetch.p0" if llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"
AHEAD = 8  # units between the prefetch of a B row and its use


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Ask the CPU for the cache line of ``arr[idx]`` (read, keep in all caches); never faults, returns nothing."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aty, ity = signature.args
        ary = context.make_array(aty)(context, builder, args[0])
        i = context.cast(builder, args[1], ity, types.intp)
        ptr = builder.bitcast(cgutils.get_item_pointer(context, builder, aty, ary, [i], wraparound=False),
                              ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            _PREFETCH)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@njit(cache=True, nogil=True, inline="always")
def _accumulate(acc, lo, hi, a_units, a_vals, b_ptr, b_idx, b_vals):  # pragma: no cover - compiled
    """acc[b] += X_A[u, a] * X_B[u, b] over the entries ``lo:hi`` of A's column (its units)."""
    for q in range(lo, hi):
        if q + 2 * AHEAD < hi:
            _prefetch(b_ptr, a_units[q + 2 * AHEAD])
        if q + AHEAD < hi:
            u2 = a_units[q + AHEAD]
            s0, s1 = b_ptr[u2], b_ptr[u2 + 1]
            for s in range(s0, s1, 16):
                _prefetch(b_idx, s)
                _prefetch(b_vals, s)
            if s1 > s0:
                _prefetch(b_idx, s1 - 1)
                _prefetch(b_vals, s1 - 1)
        u = a_units[q]
        va = np.float64(a_vals[q])
        for s in range(b_ptr[u], b_ptr[u + 1]):
            acc[b_idx[s]] += va * b_vals[s]


@njit(cache=True, nogil=True, inline="always")
def _corr(s, inv_n, m, ia, mu_b, inv_b):  # pragma: no cover - compiled
    return np.float32((s * inv_n - m * mu_b) * ia * inv_b)


@njit(parallel=True, cache=True, nogil=True)
def _corr_rows(a_ptr, a_units, a_vals, b_ptr, b_idx, b_vals, rows, inv_n, mu_a, inv_a, mu_b, inv_b, out):  # pragma: no cover
    F_B = out.shape[1]
    for r in prange(len(rows)):
        a = rows[r]
        if inv_a[a] == 0.0:
            for j in range(F_B):
                out[r, j] = np.nan
            continue
        acc = np.zeros(F_B)
        _accumulate(acc, a_ptr[a], a_ptr[a + 1], a_units, a_vals, b_ptr, b_idx, b_vals)
        m, ia = mu_a[a], inv_a[a]
        for j in range(F_B):
            if inv_b[j] == 0.0:
                out[r, j] = np.nan
            else:
                out[r, j] = _corr(acc[j], inv_n, m, ia, mu_b[j], inv_b[j])


@njit(cache=True, nogil=True, inline="always")
def _heap_offer(vals, idx, r, v, i):  # pragma: no cover - compiled
    """Keep the k largest in the min-heap ``vals[r]``/``idx[r]`` (root = smallest kept); call only when v > vals[r, 0].

    Takes the 2-D arrays and a row rather than row views: a view costs reference-count updates that
    threads sharing the parent array contend for.
    """
    k = vals.shape[1]
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= k:
            break
        if c + 1 < k and vals[r, c + 1] < vals[r, c]:
            c += 1
        if vals[r, c] >= v:
            break
        vals[r, pos], idx[r, pos] = vals[r, c], idx[r, c]
        pos = c
    vals[r, pos], idx[r, pos] = v, i


@njit(parallel=True, cache=True, nogil=True)
def _top_pass(a_ptr, a_units, a_vals, b_ptr, b_idx, b_vals, inv_n, mu_a, inv_a, mu_b, inv_b,
              row_v, row_i, col_v, col_i, col_min, acc, wbuf, n_chunks):  # pragma: no cover - compiled
    """Every row's top k into ``row_v/row_i [F_A, k]``; every column's into the calling thread's
    ``col_v/col_i [threads, F_B, k]`` (``col_min [threads, F_B]`` mirrors their roots, read contiguously).

    ``acc [threads, F_B]`` starts at zero and is left at zero; ``wbuf [threads, F_B]`` is scratch.
    Chunk ``c`` takes rows ``c, c + n_chunks, ...``.
    """
    F_A, F_B = len(inv_a), len(inv_b)
    for c in prange(n_chunks):
        t = numba.get_thread_id()
        ac, wb, cv, ci, cm = acc[t], wbuf[t], col_v[t], col_i[t], col_min[t]
        for a in range(c, F_A, n_chunks):
            if inv_a[a] == 0.0:
                continue
            _accumulate(ac, a_ptr[a], a_ptr[a + 1], a_units, a_vals, b_ptr, b_idx, b_vals)
            m, ia = mu_a[a], inv_a[a]
            for j in range(F_B):  # branch-free, so it vectorises; excluded columns (inv_b = 0) give 0
                wb[j] = _corr(ac[j], inv_n, m, ia, mu_b[j], inv_b[j])
                ac[j] = 0.0
            rmin = row_v[a, 0]
            for j in range(F_B):
                w = wb[j]
                if w > rmin:
                    _heap_offer(row_v, row_i, a, w, j)
                    rmin = row_v[a, 0]
                if w > cm[j]:
                    _heap_offer(cv, ci, j, w, a)
                    cm[j] = cv[j, 0]


@njit(cache=True, nogil=True)
def column_sums(indices, data, count, total, total_sq, mx):  # pragma: no cover - compiled
    """Per column of a sparse matrix's entries (any order): entries, sum, sum of squares, largest value."""
    for t in range(len(indices)):
        j = indices[t]
        x = np.float64(data[t])
        count[j] += 1
        total[j] += x
        total_sq[j] += x * x
        if x > mx[j]:
            mx[j] = x


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
        return cls._of(X.tocsc(), X.shape[0], mu, sd, valid, np.int32)

    @classmethod
    def b(cls, X, mu, sd, valid) -> "Side":
        # feature indices fit 16 bits up to 65,536 features: a B row is 6 bytes per entry instead of 8, and
        # reading B's rows is what the pass waits for
        return cls._of(X.tocsr(), X.shape[0], mu, sd, valid, np.uint16 if X.shape[1] <= 1 << 16 else np.int32)

    @classmethod
    def _of(cls, M, n_units, mu, sd, valid, idx_dtype) -> "Side":
        return cls(M.indptr.astype(np.int64, copy=False), M.indices.astype(idx_dtype, copy=False),
                   M.data.astype(np.float32, copy=False), np.asarray(mu, np.float64), _inverse(sd, valid),
                   int(n_units))

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
        _corr_rows(*self._a, *self._b, idx, 1.0 / self.n, self._mu_a, self._inv_a, self._mu_b, self._inv_b, out)
        return out

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each row's and column's k largest positive correlations, in one pass and without any correlation block.

        Returns ``row_v [F_A, k]`` float32, ``row_i [F_A, k]`` int64 (B features), ``col_v [F_B, k]``,
        ``col_i [F_B, k]`` (A features), each list sorted by value descending, then index ascending; a row or
        column with fewer than k positive correlations is padded with value 0 and index -1.  NaN (excluded)
        and values <= 0 never enter.
        """
        F_A, F_B = self.shape
        threads = numba.get_num_threads()
        row_v, row_i = np.zeros((F_A, k), np.float32), np.full((F_A, k), -1, np.int64)
        col_v, col_i = np.zeros((threads, F_B, k), np.float32), np.full((threads, F_B, k), -1, np.int32)
        col_min, acc, wbuf = np.zeros((threads, F_B), np.float32), np.zeros((threads, F_B)), np.empty((threads, F_B), np.float32)
        _top_pass(*self._a, *self._b, 1.0 / self.n, self._mu_a, self._inv_a, self._mu_b, self._inv_b,
                  row_v, row_i, col_v, col_i, col_min, acc, wbuf, max(1, min(F_A, 64 * threads)))
        row_v, row_i = _sorted(row_v, row_i, k)
        col_v, col_i = _sorted(col_v.transpose(1, 0, 2).reshape(F_B, -1), col_i.transpose(1, 0, 2).reshape(F_B, -1), k)
        return row_v, row_i, col_v, col_i


def _sorted(v: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of every row of ``v``/``i`` (value descending, index ascending on ties; padding -1 last)."""
    i = np.where(v > 0, i, np.iinfo(np.int64).max).astype(np.int64)
    order = np.lexsort((i, -v), axis=1)[:, :k]
    v, i = np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)
    i[~(v > 0)] = -1
    return np.ascontiguousarray(v), np.ascontiguousarray(i)


def _inverse(sd: np.ndarray, valid: np.ndarray) -> np.ndarray:
    sd = np.asarray(sd, np.float64)
    ok = np.asarray(valid, bool) & (sd > 0)
    return np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)
