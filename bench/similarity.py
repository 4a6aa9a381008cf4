"""Metric and permutation-null cost at n = 1k, 4k, 16k items.

For each metric: the time of one score, and of ``--perms`` permutations through
our batched permuters (ranks, bases and Gram matrices computed once; RSA's
Mantel sums in a compiled kernel), against the naive baseline measured in the
same run: recompute the metric on each permuted pairing (timed on a few
permutations and scaled).  Prints the ratio and the cost per 1000 permutations.

    python bench/similarity.py [--sizes 1000 4000 16000] [--perms 1000] [--dims 512] [--metrics rsa]
    python bench/similarity.py --smoke        # seconds: every metric at n = 300, 40 permutations

The goal: RSA, 1000 permutations at n = 16k in under 2 minutes.  Metrics return a ``MetricResult``;
its ``score`` is what a permutation gives.
"""

import argparse
import time

import numpy as np

from saematch.similarity import get_metric


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--metrics", nargs="+", default=["rsa", "svcca", "cka-linear", "mknn"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the test that keeps every bench running")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.perms, args.dims = [300], 40, 16
    rng = np.random.default_rng(0)
    get_metric("rsa").permuter_batch(rng.random((8, 3)), rng.random((8, 3)))(np.arange(8)[None])  # compile once
    for n in args.sizes:
        X = rng.standard_normal((n, args.dims)).astype(np.float32)
        Y = X @ rng.standard_normal((args.dims, args.dims)).astype(np.float32) + rng.standard_normal((n, args.dims)).astype(np.float32)
        perms = np.stack([rng.permutation(n) for _ in range(args.perms)])
        for name in args.metrics:
            m = get_metric(name)
            obs, t_obs = timed(lambda: m(X, Y).score)
            fn, t_setup = timed(lambda: m.permuter_batch(X, Y))
            fast, t_perm = timed(lambda: np.concatenate([fn(perms[i:i + 32]) for i in range(0, len(perms), 32)]))
            ours = t_setup + t_perm
            n_naive = 1 if n >= 8000 else 3
            slow, t_naive = timed(lambda: [m(X, Y[p]).score for p in perms[:n_naive]])
            naive = t_naive * args.perms / n_naive
            if not np.allclose(fast[:n_naive], slow, atol=1e-4):
                raise SystemExit(f"{name} at n={n}: batched null {fast[:n_naive]} differs from recomputed {slow}")
            print(f"n={n:6d} {name:10s} score {obs:+.4f} in {t_obs:6.2f} s | {args.perms} perms: ours {ours:7.1f} s "
                  f"(setup {t_setup:5.1f} s), recompute {naive:8.1f} s (from {n_naive}), ratio {naive / ours:7.1f}x, "
                  f"per 1000 perms {1000 * ours / args.perms:7.1f} s", flush=True)


if __name__ == "__main__":
    main()
