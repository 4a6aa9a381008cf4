"""Permutation-null cost: our reuse-the-invariants permuters vs recomputing per permutation.

    python bench/similarity.py [--sizes 1000 4000] [--perms 20]
"""

import argparse
import time

import numpy as np

from saematch.similarity import get_metric


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--perms", type=int, default=20)
    ap.add_argument("--dims", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        X = rng.standard_normal((n, args.dims))
        Y = X @ rng.standard_normal((args.dims, args.dims)) + rng.standard_normal((n, args.dims))
        perms = [rng.permutation(n) for _ in range(args.perms)]
        for name in ["rsa", "svcca", "cka-linear", "mknn"]:
            m = get_metric(name)
            t = time.perf_counter()
            fn = m.permuter(X, Y)
            fast = [fn(p) for p in perms]
            ours = time.perf_counter() - t
            t = time.perf_counter()
            slow = [m(X, Y[p]) for p in perms[: max(2, args.perms // 4)]]
            naive = (time.perf_counter() - t) * args.perms / max(2, args.perms // 4)
            assert np.allclose(fast[: len(slow)], slow, atol=1e-5)
            print(f"n={n:6d} {name:11s} {args.perms} perms: ours {ours:7.2f} s, recompute {naive:7.2f} s, "
                  f"ratio {naive / ours:6.1f}x, per 1000 perms {1000 * ours / args.perms:7.1f} s")


if __name__ == "__main__":
    main()
