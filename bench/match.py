"""Certified Hungarian matching of SAE features on synthetic TopK-like activations, against dense, in one run.

    python bench/match.py [--features 16384] [--k 32] [--units 1000000] [--no-dense] [--doc-units 500]
    python bench/match.py --grid [--features 16384] [--layers-a 3 --layers-b 4] [--device cuda]
    python bench/match.py --smoke | --grid --smoke         # seconds, for the test that keeps benches running

Ours is the path the match stage runs beyond ``dense_limit`` (``HungarianConfig.assign`` ->
``matching.grid.match_grid``): per-feature statistics and the CSC copy of A, **one** pass over the
co-activations that keeps every row's and column's top ``--certify-k`` correlations as it goes, a
warm-started sparse solve on the top ``--candidates``, and a certificate that checks those lists
exactly, bounds everything outside them, and recomputes only the rows the bound cannot clear.  No
correlation block is written and no second pass is made for candidates.

The baseline, in the same run on the same pair: the dense ``[F, F]`` correlation (the same kernel)
and ``scipy.optimize.linear_sum_assignment`` on it.  Both objectives are printed and compared.

Then the per-document sufficient statistics of the matched pairs (``matching.docstats``: n, sums,
squares and cross-products per document, for document-resampled intervals), timed on their own,
so the total is given with and without them.

``--grid`` times whole grids of layer pairs at the seed paper's shape (16k latents per layer) and
extrapolates to its 26 x 42 = 1,092 pairs on one 16-core node (``grid_main``).
"""

import argparse
import os
import resource
import sys
import time

import numpy as np
import scipy.sparse as sp


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


class Clock:
    """Wall and CPU seconds of a block (CPU: all threads of this process; on a shared machine the wall
    time also counts what other processes took from our cores)."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t, time.process_time() - self.c


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel, and import what the timed code imports."""
    from saematch.matching.assign import hungarian_dense
    from saematch.matching.correlation import dense_corr
    from saematch.matching.grid import match_grid

    XA, XB = planted_pair(400, 64, 4, np.random.default_rng(1))
    match_grid({0: XA}, {0: XB}, k=2, k_max=4)
    hungarian_dense(dense_corr(XA, XB)[0])
    doc_stats()


def doc_stats():
    """The per-document statistics function, or None where this checkout has none."""
    try:
        from saematch.matching.docstats import pair_doc_stats
    except ImportError:
        return None
    return pair_doc_stats


def main() -> None:
    if "--grid" in sys.argv[1:]:
        return grid_main([a for a in sys.argv[1:] if a != "--grid"])
    from saematch.matching.assign import hungarian_dense
    from saematch.matching.correlation import dense_corr
    from saematch.matching.grid import match_grid

    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32, help="SAE k: active features per unit")
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--candidates", type=int, default=16, help="top-K the solve starts from")
    ap.add_argument("--certify-k", type=int, default=32, help="top-K per row and column kept by the pass")
    ap.add_argument("--doc-units", type=int, default=500, help="units per document for the per-document statistics")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense baseline (beyond what fits)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the test that keeps every bench running")
    args = ap.parse_args()
    if args.smoke:
        args.features, args.units = 512, 20_000
    F, N = args.features, args.units
    warm_up()
    with Clock() as c:
        XA, XB = planted_pair(N, F, args.k, np.random.default_rng(0))
    print(f"planted pair F={F} x {F}, k={args.k}, N={N:,} units, {XA.nnz + XB.nnz:,} activations "
          f"(made in {c.wall:.1f} s); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    with Clock() as ours:
        res = match_grid({0: XA}, {0: XB}, k=args.candidates, k_max=args.certify_k)
    asg, g = res[0, 0], res.log[0]
    prep = ours.wall - g.corr_s - g.solve_s
    peak_ours = peak_gb()
    print(f"ours, one pass + certified matching: {ours.wall:6.2f} s wall / {ours.cpu:6.2f} CPU-s = prepare "
          f"(statistics, CSC of A) {prep:.2f} s + top-{args.certify_k} pass {g.corr_s:.2f} s + solve and certificate "
          f"{g.solve_s:.2f} s; objective {asg.objective:.4f}, gap {asg.gap:.2g}, solves {g.rounds}, rows recomputed "
          f"exactly {g.checked_rows} of {F}; peak RSS so far {peak_ours:.1f} GB (inputs included)", flush=True)

    pds = doc_stats()
    if pds is None:
        print("per-document statistics: saematch.matching.docstats not in this checkout, skipped")
    else:
        doc = np.arange(N) // args.doc_units
        with Clock() as d:
            st = pds(XA, XB, asg.rows, asg.cols, doc)
        print(f"per-document statistics of the {len(asg.rows)} pairs over {st.n_docs} documents: {d.wall:.2f} s wall / "
              f"{d.cpu:.2f} CPU-s; ours without them {ours.wall:.2f} s, with them {ours.wall + d.wall:.2f} s", flush=True)
        del st

    if args.no_dense:
        print("ratio: not measured (--no-dense)")
        return
    with Clock() as dc:
        C = dense_corr(XA, XB)[0]
    with Clock() as dl:
        dense = hungarian_dense(C)
    del C
    dense_s = dc.wall + dl.wall
    same = abs(dense.objective - asg.objective) <= 1e-6 * max(1.0, abs(dense.objective))
    print(f"dense: correlation {dc.wall:.2f} s + linear_sum_assignment {dl.wall:.2f} s = {dense_s:.2f} s wall / "
          f"{dc.cpu + dl.cpu:.2f} CPU-s, objective {dense.objective:.4f}; peak RSS {peak_gb():.1f} GB")
    both = len(dense.rows) == len(asg.rows)
    ident = np.mean(dense.cols[np.argsort(dense.rows)] == asg.cols[np.argsort(asg.rows)]) if both else float("nan")
    print(f"ratio dense/ours: {dense_s / ours.wall:.1f}x wall, {(dc.cpu + dl.cpu) / ours.cpu:.1f}x CPU; same objective "
          f"as dense: {same} (difference {asg.objective - dense.objective:+.2e}); identical pairs {ident:.4f}")
    if not same or asg.gap != 0:
        raise SystemExit("the certified matching does not reach the dense optimum")


# --- the whole grid of layer pairs ------------------------------------------------------------------------------


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


def grid_main(argv) -> None:
    from saematch.matching.assign import hungarian_dense
    from saematch.matching.correlation import dense_corr
    from saematch.matching.grid import match_grid

    ap = argparse.ArgumentParser(prog="bench/match.py --grid")
    ap.add_argument("--features", type=int, default=16384, help="latents per layer (the seed paper's: 16k)")
    ap.add_argument("--k", type=int, default=32, help="SAE k: active features per unit")
    ap.add_argument("--units", type=int, default=200_000)
    ap.add_argument("--layers-a", type=int, default=2, help="A layers measured (evenly spaced depths)")
    ap.add_argument("--layers-b", type=int, default=3)
    ap.add_argument("--full", type=int, nargs=2, default=(26, 42), help="the grid to project (A x B layers)")
    ap.add_argument("--workers", type=int, default=1, help="processes solving pairs (1: here, all cores per pair)")
    ap.add_argument("--device", default="cpu", help="where the top-k pass runs: cpu, cuda or cuda:N")
    ap.add_argument("--baseline-pairs", type=int, default=1, help="pairs also solved densely (the baseline)")
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the test that keeps every bench running")
    args = ap.parse_args(argv)
    if args.smoke:
        args.features, args.units, args.layers_a, args.layers_b = 256, 5000, 2, 2
    F, N, cores = args.features, args.units, os.cpu_count()
    warm_up()
    with Clock() as c:
        XAs, XBs = window_grid(N, F, args.k, args.layers_a, args.layers_b)
    pairs = [(a, b) for a in XAs for b in XBs]
    print(f"window grid {args.layers_a} x {args.layers_b} layers, F={F} x {F}, k={args.k}, N={N:,} units "
          f"(made in {c.wall:.0f} s); {cores} cores here, load average {os.getloadavg()[0]:.1f}", flush=True)

    with Clock() as run:
        res = match_grid(XAs, XBs, device=args.device, workers=args.workers)
    log = res.log
    corr_cpu, solve_cpu = np.mean([g.corr_cpu_s for g in log]), np.mean([g.solve_cpu_s for g in log])
    per_pair = run.wall / len(pairs)
    print(f"grid, {args.workers} worker(s), top-k pass on {args.device}: {run.wall:.1f} s wall for {len(pairs)} pairs "
          f"({per_pair:.2f} s/pair, {run.cpu / len(pairs):.2f} CPU-s/pair); per pair: pass "
          f"{np.mean([g.corr_s for g in log]):.2f} s / {corr_cpu:.2f} CPU-s, solve + certificate "
          f"{np.mean([g.solve_s for g in log]):.2f} s / {solve_cpu:.2f} CPU-s; max gap {res.max_gap:.2g}; solves "
          f"{min(g.rounds for g in log)}-{max(g.rounds for g in log)}; rows recomputed "
          f"{np.mean([g.checked_rows for g in log]):.0f} of {F}", flush=True)

    base = [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, max(args.baseline_pairs, 1)).astype(int))]
    dense_wall, dense_cpu, same = [], [], True
    for p in base:
        with Clock() as d:
            dense = hungarian_dense(dense_corr(XAs[p[0]], XBs[p[1]])[0])
        dense_wall.append(d.wall)
        dense_cpu.append(d.cpu)
        same &= abs(dense.objective - res[p].objective) <= 1e-6 * max(1.0, abs(dense.objective))
        print(f"  dense correlation + linear_sum_assignment, pair {p}: {d.wall:.1f} s wall / {d.cpu:.1f} CPU-s, "
              f"objective {dense.objective:.4f}; grid {res[p].objective:.4f} (gap {res[p].gap:.2g})", flush=True)
    ours_cpu = corr_cpu + solve_cpu
    print(f"ratio dense/grid per pair: {np.mean(dense_wall) / per_pair:.1f}x wall, {np.mean(dense_cpu) / ours_cpu:.1f}x "
          f"CPU; same objective: {same}")

    n_full = args.full[0] * args.full[1]
    print(f"\nwhole {args.full[0]} x {args.full[1]} grid ({n_full} pairs) at F={F}, N={N:,}, extrapolated from the "
          f"means above:")
    print(f"  here ({cores} cores, wall-clock rate as measured): {per_pair * n_full / 3600:.2f} h; dense "
          f"{np.mean(dense_wall) * n_full / 3600:.1f} h")
    print(f"  one {args.node_cores}-core node, CPU only: {ours_cpu:.2f} CPU-s/pair x {n_full} / {args.node_cores} "
          f"single-threaded workers = {ours_cpu * n_full / args.node_cores / 60:.1f} min.  Assumes each of its cores "
          f"runs as fast as one here and memory bandwidth keeps up with {args.node_cores} workers (the pass waits on "
          f"memory, so this is a lower bound); the activations of all layers must fit in RAM "
          f"(about {8 * sum(X.nnz for X in (*XAs.values(), *XBs.values())) / (len(XAs) + len(XBs)) / 2 ** 30 * sum(args.full):.0f} "
          f"GB for {sum(args.full)} layers at this N)")
    if str(args.device) == "cpu":
        print(f"  {args.node_cores} cores + one GPU: no GPU figure was measured here (run with --device cuda where one "
              f"is lent); the solves alone take {solve_cpu:.2f} CPU-s/pair, so {solve_cpu * n_full / (args.node_cores - 1) / 60:.1f} "
              f"min on {args.node_cores - 1} cores if the GPU pass keeps up")
    else:
        gpu = np.mean([g.corr_s for g in log]) * n_full
        solves = solve_cpu * n_full / (args.node_cores - 1)
        print(f"  {args.node_cores} cores + this GPU (measured): max(solves {solves / 60:.1f} min, GPU passes "
              f"{gpu / 60:.1f} min) = {max(solves, gpu) / 60:.1f} min")
    if not same or res.max_gap != 0:
        raise SystemExit("the grid's certified matching does not reach the dense optimum")


if __name__ == "__main__":
    main()
