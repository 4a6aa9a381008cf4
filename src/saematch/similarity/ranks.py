"""Average ranks (as ``scipy.stats.rankdata(method="average")``) of long vectors, fast.

RSA ranks n(n-1)/2 dissimilarities: 128M values at n = 16k, where scipy's
argsort-based ``rankdata`` takes over a minute on 2 cores.  numpy sorts plain
64-bit integers with SIMD about 4x faster than it argsorts, so each value's
order-preserving 64-bit code is truncated to its top bits and packed with its
index into one integer key; one ``np.sort`` gives the order up to runs of equal
truncated codes, which a compiled pass then sorts exactly by the full values
where they are out of order (runs are short and read sequentially).  Ties on the exact values get their average rank.  The result
equals scipy's (tested); beyond 2^32 values scipy is used.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _sort_runs(keys, idx_bits, sv, order):  # pragma: no cover - compiled
    """Within runs of equal truncated codes, sort ``(sv, order)`` by the exact value ``sv`` (in place)."""
    m = len(keys)
    shift = np.uint64(idx_bits)
    a = 0
    while a < m:
        b = a + 1
        top = keys[a] >> shift
        ordered = True
        while b < m and (keys[b] >> shift) == top:
            if sv[b] < sv[b - 1]:
                ordered = False
            b += 1
        if not ordered:
            o = np.argsort(sv[a:b], kind="mergesort")
            seg_v, seg_o = sv[a:b][o], order[a:b][o]
            sv[a:b] = seg_v
            order[a:b] = seg_o
        a = b


@njit(cache=True)
def _keys(v, idx_bits):  # pragma: no cover - compiled
    """Order-preserving unsigned code of each float, truncated, with its index in the low bits."""
    u = v.view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    shift = np.uint64(idx_bits)
    keys = np.empty(len(v), np.uint64)
    for t in range(len(v)):
        code = ~u[t] if u[t] & sign else u[t] | sign
        keys[t] = ((code >> shift) << shift) | np.uint64(t)
    return keys


@njit(cache=True)
def _tie_ranks(sv):  # pragma: no cover - compiled
    """1-based ranks of the sorted values ``sv``, ties averaged."""
    m = len(sv)
    r = np.empty(m)
    a = 0
    while a < m:
        b = a + 1
        while b < m and sv[b] == sv[a]:
            b += 1
        avg = (a + 1 + b) / 2.0
        for t in range(a, b):
            r[t] = avg
        a = b
    return r


def average_ranks(v: np.ndarray) -> np.ndarray:
    """``[m]`` float64 ranks (1-based, ties averaged) of finite values ``v[m]``."""
    v = np.ascontiguousarray(v, dtype=np.float64)
    m = len(v)
    if m >= 2**32:
        from scipy.stats import rankdata

        return rankdata(v)
    idx_bits = max(1, int(m - 1).bit_length())
    keys = _keys(v, idx_bits)
    keys.sort()
    order = (keys & np.uint64((1 << idx_bits) - 1)).astype(np.int64)
    sv = v[order]
    _sort_runs(keys, idx_bits, sv, order)
    del keys
    ranks = np.empty(m)
    ranks[order] = _tie_ranks(sv)
    return ranks
