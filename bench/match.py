"""Correlation and Hungarian matching on synthetic TopK-like activations, against baselines, in one run.

    python bench/match.py [--features 16384] [--k 32] [--units 200000]

Correlation (every A feature against every B feature): our co-activation
kernel, one pass over all correlation blocks, against a dense chunked matmul
like the paper code's (timed on a slice of units, then scaled linearly) and
against scipy's CSR product X_A^T X_B (the sparse-library route).  Matching:
dense linear_sum_assignment vs our certified sparse solver (top-K candidates
+ LP-dual check of every positive correlation).  ``--no-dense`` skips the dense
assignment (for F beyond what fits).
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp

from saematch.matching.assign import hungarian_dense, hungarian_sparse
from saematch.matching.correlation import check_pair, corr_blocks, dense_corr, topk_candidates


def topk_acts(N, F, k, rng):
    idx = rng.integers(0, F, size=(N, k))
    vals = rng.exponential(1.0, (N, k)).astype(np.float32)
    X = sp.csr_matrix((vals.ravel(), idx.ravel(), np.arange(0, N * k + 1, k)), shape=(N, F))
    X.sum_duplicates()
    return X


def planted_pair(N, F, k, rng):
    XA = topk_acts(N, F, k, rng)
    perm = rng.permutation(F)
    XB = (XA @ sp.csr_matrix((np.ones(F), (np.arange(F), perm)), shape=(F, F))).tocsr()
    XB.data *= np.clip(1 + 0.5 * rng.standard_normal(XB.nnz), 0.05, None).astype(np.float32)
    return XA, (XB + topk_acts(N, F, k // 4, rng)).tocsr()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--dense-units", type=int, default=5000, help="units timed for the dense baseline")
    ap.add_argument("--candidates", type=int, default=16, help="top-K candidates per row and column")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense baselines (beyond what fits)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    F, N = args.features, args.units
    XA, XB = planted_pair(N, F, args.k, rng)

    st = check_pair(XA, XB)
    t = time.perf_counter()
    for _ in corr_blocks(XA, XB, st):
        pass
    ours_corr = time.perf_counter() - t
    n_s = min(N, 100_000)
    t = time.perf_counter()
    S = (XA[:n_s].T.tocsr().astype(np.float64) @ XB[:n_s].astype(np.float64)).tocsr()
    csr_corr = (time.perf_counter() - t) * N / n_s
    dense_t = float("nan")
    if not args.no_dense:
        n_d = min(args.dense_units, N)
        A, B = XA[:n_d].toarray(), XB[:n_d].toarray()
        t = time.perf_counter()
        for s in range(0, n_d, 1000):
            A[s:s + 1000].T @ B[s:s + 1000]
        dense_t = (time.perf_counter() - t) * N / n_d
        del A, B
    print(f"F={F} x {F}, k={args.k}, N={N} units; co-activation nnz over {n_s} units {S.nnz:,}", flush=True)
    print(f"correlation, co-activation kernel: {ours_corr:7.2f} s")
    print(f"correlation, scipy CSR product:    {csr_corr:7.2f} s (timed on {n_s} units, scaled to N)")
    print(f"correlation, dense chunked matmul: {dense_t:7.2f} s (timed on {args.dense_units} units, scaled to N)")
    print(f"ratios: dense/ours {dense_t / ours_corr:.1f}x, csr/ours {csr_corr / ours_corr:.1f}x", flush=True)
    del S

    t = time.perf_counter()
    K = args.candidates
    G = topk_candidates(XA, XB, st, K)
    t_cand = time.perf_counter() - t
    sparse = hungarian_sparse(G, lambda: corr_blocks(XA, XB, st), K)
    ours_match = time.perf_counter() - t
    print(f"matching, certified sparse (K={K}):     {ours_match:7.2f} s (candidates {t_cand:.1f} s), objective "
          f"{sparse.objective:.4f}, gap {sparse.gap:.2g}, rounds {sparse.rounds}", flush=True)
    if not args.no_dense:
        t = time.perf_counter()
        dense = hungarian_dense(dense_corr(XA, XB)[0])
        dense_match = time.perf_counter() - t
        print(f"matching, dense linear_sum_assignment: {dense_match:7.2f} s, objective {dense.objective:.4f}")
        print(f"ratio: {dense_match / ours_match:.1f}x; same objective: {abs(dense.objective - sparse.objective) < 1e-6 * F}")
    print(f"total (ours, correlation pass + certified matching): {ours_corr + ours_match:.1f} s")


if __name__ == "__main__":
    main()
