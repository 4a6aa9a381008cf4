"""Correlation and Hungarian matching on synthetic TopK-like activations, against baselines, in one run.

    python bench/match.py [--features 16384] [--k 32] [--units 200000]
    python bench/match.py --grid [--layers-a 3 --layers-b 4] [--data window|planted] [--workers N]

Correlation (every A feature against every B feature): our co-activation
kernel, one pass over all correlation blocks, against a dense chunked matmul
like the paper code's (timed on a slice of units, then scaled linearly) and
against scipy's CSR product X_A^T X_B (the sparse-library route).  Matching:
dense linear_sum_assignment vs our certified sparse solver (top-K candidates
+ LP-dual check of every positive correlation).  ``--no-dense`` skips the dense
assignment (for F beyond what fits).

``--grid`` times a whole grid of layer pairs: the grid API
(``matching.grid.match_grid``) against the current per-pair path, in one run,
and projects the 26 x 42 Gemma-2-2B x 9B grid (``grid_main`` below).
"""

import argparse
import sys
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
    if "--grid" in sys.argv[1:]:
        return grid_main([a for a in sys.argv[1:] if a != "--grid"])
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


# --- the whole grid of layer pairs ------------------------------------------------------------------------------


def planted_grid(N, F, k, n_a, n_b, seed=0):
    """Every layer a permuted, noisy copy of one base layer plus random firing: every feature has a partner."""
    base = topk_acts(N, F, k, np.random.default_rng(seed))

    def layer(s):
        rng = np.random.default_rng([seed, s])
        X = base[:, rng.permutation(F)].tocsr()
        X.data *= np.clip(1 + 0.5 * rng.standard_normal(X.nnz), 0.05, None).astype(np.float32)
        return (X + topk_acts(N, F, k // 4, rng)).tocsr()

    return {a: layer(a) for a in range(n_a)}, {b: layer(1000 + b) for b in range(n_b)}


def window_grid(N, F, k, n_a, n_b, seed=0, shared=0.8):
    """Layers at evenly spaced depths.  Each copies (permuted, with noise) ``shared`` of its features from a window
    of a concept pool [N, 2F] that slides with depth; the rest fire at random.  Near pairs share most features,
    the first layer and the last share none: many features have no partner, as in real SAEs."""
    Z = topk_acts(N, 2 * F, 2 * k, np.random.default_rng([seed, 1])).tocsc()

    def layer(depth, s):
        rng = np.random.default_rng([seed, s])
        n_sh = int(shared * F)
        S = Z[:, int(round(depth * F)) + rng.permutation(F)[:n_sh]].tocsr()
        S.data *= np.clip(1 + 0.5 * rng.standard_normal(S.nnz), 0.05, None).astype(np.float32)
        S = sp.csr_matrix((S.data, rng.permutation(F)[:n_sh][S.indices], S.indptr), shape=(N, F))
        return (S + topk_acts(N, F, max(1, int(k * (1 - shared))), rng)).tocsr()

    return ({a: layer(d, a) for a, d in enumerate(np.linspace(0, 1, n_a))},
            {b: layer(d, 1000 + b) for b, d in enumerate(np.linspace(0, 1, n_b))})


def current_pair(XA, XB):
    """The per-pair path the match stage runs today beyond ``dense_limit`` (HungarianConfig.assign)."""
    from saematch.matching.methods.hungarian import HungarianConfig

    return HungarianConfig(dense_limit=0).assign(XA, XB)


def torch_vs_numba(XA, XB, k_max=32):
    """One pair's top-k pass, torch on the CPU against the numba kernel (both on all cores)."""
    from saematch.matching.coact import Side
    from saematch.matching.correlation import corr_rows, top_lists
    from saematch.matching.gpu import TorchCorr

    st = check_pair(XA, XB)
    a, b = Side.a(XA, st.a.mean, st.a.std, st.valid_a), Side.b(XB, st.b.mean, st.b.std, st.valid_b)
    t = time.perf_counter()
    want = top_lists(corr_rows(XA, XB, st), k_max)
    numba_s = time.perf_counter() - t
    t = time.perf_counter()
    got = TorchCorr(a, b, "cpu").top_lists(k_max)
    torch_s = time.perf_counter() - t
    print(f"top-{k_max} pass on the CPU, one pair: numba {numba_s:.1f} s, torch {torch_s:.1f} s "
          f"({torch_s / numba_s:.1f}x slower); same lists: {np.allclose(got.row_v, want.row_v, rtol=1e-6)}", flush=True)


def grid_main(argv) -> None:
    import os

    from saematch.matching.grid import match_grid

    ap = argparse.ArgumentParser(prog="bench/match.py --grid")
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32, help="SAE k: active features per unit")
    ap.add_argument("--units", type=int, default=200_000)
    ap.add_argument("--layers-a", type=int, default=3, help="A layers measured (evenly spaced depths)")
    ap.add_argument("--layers-b", type=int, default=4)
    ap.add_argument("--full", type=int, nargs=2, default=(26, 42), help="the grid to project (A x B layers)")
    ap.add_argument("--data", choices=("window", "planted"), default="window")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline-pairs", type=int, default=3,
                    help="pairs timed with the current per-pair path (the slowest part of the run)")
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--torch-cpu", action="store_true", help="also time the torch pass on the CPU against numba")
    args = ap.parse_args(argv)
    F, N, cores = args.features, args.units, os.cpu_count()
    t = time.perf_counter()
    gen = window_grid if args.data == "window" else planted_grid
    XAs, XBs = gen(N, F, args.k, args.layers_a, args.layers_b)
    pairs = [(a, b) for a in XAs for b in XBs]
    print(f"{args.data} grid {args.layers_a} x {args.layers_b} layers, F={F} x {F}, k={args.k}, N={N:,} units; "
          f"{cores} cores here; data made in {time.perf_counter() - t:.0f} s", flush=True)

    t = time.perf_counter()
    res = match_grid(XAs, XBs, device=args.device, workers=args.workers)
    grid_s = time.perf_counter() - t
    log = res.log
    corr_cpu, solve_cpu = np.mean([g.corr_cpu_s for g in log]), np.mean([g.solve_cpu_s for g in log])
    print(f"grid API, {args.workers} workers, device {args.device}: {grid_s:.1f} s wall for {len(pairs)} pairs "
          f"({grid_s / len(pairs):.2f} s/pair); per pair: top-k pass {np.mean([g.corr_s for g in log]):.2f} s wall "
          f"/ {corr_cpu:.2f} CPU-s, solve + certificate {np.mean([g.solve_s for g in log]):.2f} s wall / "
          f"{solve_cpu:.2f} CPU-s; max gap {res.max_gap:.2g}; solves per pair {min(g.rounds for g in log)}-"
          f"{max(g.rounds for g in log)}; rows recomputed per pair {np.mean([g.checked_rows for g in log]):.0f} of {F}",
          flush=True)
    if args.torch_cpu:
        torch_vs_numba(XAs[0], XBs[0])

    base_pairs = [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, max(args.baseline_pairs, 1)).astype(int))]
    old_s, old_cpu, same = [], [], True
    for p in base_pairs:
        t, c = time.perf_counter(), time.process_time()
        old = current_pair(XAs[p[0]], XBs[p[1]])
        old_s.append(time.perf_counter() - t)
        old_cpu.append(time.process_time() - c)
        new = res[p]
        same &= abs(old.objective - new.objective) <= 1e-6 * F or old.gap > 0
        print(f"  current per-pair path, pair {p}: {old_s[-1]:6.1f} s wall / {old_cpu[-1]:6.1f} CPU-s, gap {old.gap:.2g}"
              f", solves {old.rounds}; objective {old.objective:.4f}, grid API {new.objective:.4f} (gap {new.gap:.2g})",
              flush=True)
    new_cpu = np.mean([g.corr_cpu_s + g.solve_cpu_s for g in log if (g.layer_a, g.layer_b) in base_pairs])
    print(f"same pairs: current path {np.mean(old_cpu):.1f} CPU-s/pair, grid API {new_cpu:.1f} CPU-s/pair "
          f"({np.mean(old_cpu) / new_cpu:.1f}x); same objective wherever the current path certified: {same}")

    n_full = args.full[0] * args.full[1]
    old_full = np.mean(old_s) * n_full  # the current path runs one pair at a time, its kernels on all cores
    new_full = grid_s / len(pairs) * n_full
    print(f"\nwhole {args.full[0]} x {args.full[1]} grid ({n_full} pairs), extrapolated from the means above:")
    print(f"  here, {cores} cores, at the wall-clock rates measured: current path {old_full / 3600:.1f} h, "
          f"grid API {new_full / 3600:.2f} h ({old_full / new_full:.1f}x)")
    cpu_node = (corr_cpu + solve_cpu) * n_full / args.node_cores
    print(f"  {args.node_cores}-core node, CPU only: {corr_cpu + solve_cpu:.1f} CPU-s/pair x {n_full} / "
          f"{args.node_cores} workers = {cpu_node / 60:.0f} min (assumes this machine's per-core speed and no "
          f"memory-bandwidth loss with {args.node_cores} workers)")
    solves = solve_cpu * n_full / (args.node_cores - 1)
    if args.device == "cpu":
        print(f"  {args.node_cores} cores + one GPU: {solve_cpu:.1f} CPU-s/pair of solves x {n_full} / "
              f"{args.node_cores - 1} workers = {solves / 60:.0f} min, if the GPU's top-k pass takes under "
              f"{solve_cpu / (args.node_cores - 1):.2f} s/pair (not measured here: run with --device cuda); "
              f"otherwise {n_full} x the GPU pass")
    else:
        gpu = np.mean([g.corr_s for g in log]) * n_full
        print(f"  {args.node_cores} cores + this GPU: max(solves {solves / 60:.0f} min, GPU passes {gpu / 60:.0f} min)"
              f" = {max(solves, gpu) / 60:.0f} min")


if __name__ == "__main__":
    main()
