"""Certified one-to-one matching of every layer pair of two models (the grid).

Gemma-2-2B x 9B is 26 x 42 = 1,092 layer pairs at 16k x 16k features.  What is
done once, and where:

- per layer, not per pair (:func:`prepare_layers`): the unit subset, the
  validity checks, the per-feature statistics and the layout the co-activation
  kernel reads (``coact.Side``: CSC for A's layers, CSR for B's);
- per pair, one pass over the co-activations keeps every row's and column's
  top ``k_max`` as it goes, never writing a correlation block (numba on the
  CPU: ``coact.CorrRows.top``; torch on CUDA: ``gpu.TorchCorr``).  The solve
  runs on the top ``k`` of them (``assign.hungarian_sparse`` with the
  warm-startable ``ssp`` solver: each certificate round starts from the last
  round's duals).  Its certificate needs no second pass over the correlation:
  the top-``k_max`` entries are checked as they are, their bounds clear almost
  every other row (``duals.bound_violations``), and only the rows left are
  recomputed exactly, once each (``_RowCache``);
- pairs are spread over ``workers`` processes (``concurrent.futures``).

Every result is certified: ``gap`` 0, or the proven bound when ``max_rounds``
ran out.  Each pair is solved the same way whatever the number of workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import scipy.sparse as sp

from saematch.errors import SaematchError
from saematch.matching.assign import Assignment, hungarian_sparse
from saematch.matching.coact import CorrRows, Side
from saematch.matching.correlation import TopLists, feature_stats, top_lists

Layer = Hashable
_FIELDS = ("ptr", "idx", "vals", "mu", "inv")


@dataclass(frozen=True)
class PairLog:
    """How one layer pair was solved: k, solves, proven gap, rows recomputed exactly, and seconds.

    corr_s: the top-k pass (on the worker, or on the device in the main process); solve_s: solve + certificate;
    corr_cpu_s, solve_cpu_s: the CPU time of the same (all threads of the process that ran it; on a shared
    machine this, not the wall time, is what a core of one's own would take).
    """

    layer_a: Layer
    layer_b: Layer
    k: int
    rounds: int
    gap: float
    checked_rows: int
    corr_s: float
    solve_s: float
    corr_cpu_s: float = float("nan")
    solve_cpu_s: float = float("nan")


@dataclass
class GridResult:
    """Per-pair certified assignments, keyed ``(layer_a, layer_b)``, and how each was solved."""

    assignments: dict[tuple[Layer, Layer], Assignment] = field(default_factory=dict)
    log: list[PairLog] = field(default_factory=list)

    def __getitem__(self, key: tuple[Layer, Layer]) -> Assignment:
        return self.assignments[key]

    @property
    def max_gap(self) -> float:
        return max((a.gap for a in self.assignments.values()), default=0.0)


def prepare_layers(Xs: Mapping[Layer, sp.spmatrix], side: str, units: np.ndarray | None = None,
                   exclude: Mapping[Layer, np.ndarray] | None = None) -> dict[Layer, Side]:
    """Each layer's ``coact.Side`` (``side`` 'a': CSC, 'b': CSR), built once for all its pairs.

    ``units``: ``[N]`` bool, the units to pair on (e.g. the held-out split's train units).
    ``exclude``: per layer, ``[F]`` bool features left out of pairing (dead, dense, ...).
    """
    if side not in ("a", "b"):
        raise SaematchError(f"side must be 'a' or 'b', got {side!r}")
    out = {}
    for layer, X in Xs.items():
        X = sp.csr_matrix(X)
        if units is not None:
            if np.shape(units) != (X.shape[0],):
                raise SaematchError(f"layer {layer!r}: the unit mask needs one entry per unit ({X.shape[0]})")
            X = X[np.asarray(units, bool)]
        if X.shape[0] < 2:
            raise SaematchError("correlation needs at least two units")
        if X.nnz and not np.isfinite(X.data).all():
            raise SaematchError(f"feature activations of layer {layer!r} contain NaN or infinite values")
        if side == "a":
            X = X.tocsc()  # the layout side A is read in: converted once, statistics included
        st = feature_stats(X)
        valid = ~st.dead
        if exclude is not None and layer in exclude:
            drop = np.asarray(exclude[layer], bool)
            if drop.shape != (X.shape[1],):
                raise SaematchError(f"layer {layer!r}: an exclusion mask needs one entry per feature ({X.shape[1]})")
            valid &= ~drop
        out[layer] = (Side.a if side == "a" else Side.b)(X, st.mean, st.std, valid)
    if len({s.n_units for s in out.values()}) > 1:
        raise SaematchError("the layers cover different numbers of units")
    return out


def match_grid(
    XAs: Mapping[Layer, sp.spmatrix], XBs: Mapping[Layer, sp.spmatrix], *, device: str = "cpu", workers: int = 1,
    k: int = 8, k_max: int = 32, max_rounds: int = 12, units: np.ndarray | None = None,
    exclude_a: Mapping[Layer, np.ndarray] | None = None, exclude_b: Mapping[Layer, np.ndarray] | None = None,
    backend: str = "auto", pairs: list[tuple[Layer, Layer]] | None = None, tmp_dir: str | None = None,
) -> GridResult:
    """Certified maximum-correlation one-to-one matching of every (A layer, B layer) pair.

    ``XAs``, ``XBs``: per layer, ``[N, F]`` sparse feature activations of models
    A and B over the same N units.  ``device``: 'cpu', 'cuda' or 'cuda:N', where
    the correlation pass runs (solves and certificates always run on CPU cores).
    ``workers``: processes that solve the pairs (1: in this process; more need
    the caller's script to be import-safe, as ``multiprocessing``'s spawn does).
    ``k``: candidates per row and column the solve starts from; ``k_max``: the
    top lists the pass keeps, checked exactly by the certificate.
    ``max_rounds``: solves per pair before the gap is reported as it stands.
    ``units``, ``exclude_a``/``exclude_b``: see :func:`prepare_layers`.
    ``backend``: 'auto' (numba on the CPU, torch on CUDA), 'numba' or 'torch'.
    ``pairs``: a subset of the grid (default: all, A-major).  ``tmp_dir``: where,
    with several workers, the prepared layers are written for them to memory-map
    (about 8 bytes per nonzero activation per layer; default: the system's).
    """
    if not 1 <= k <= k_max:
        raise SaematchError(f"need 1 <= k <= k_max, got k={k}, k_max={k_max}")
    if backend == "auto":
        backend = "numba" if str(device) == "cpu" else "torch"
    if backend not in ("numba", "torch") or (backend == "numba" and str(device) != "cpu"):
        raise SaematchError(f"backend {backend!r} cannot run on device {device!r}")
    A, B = prepare_layers(XAs, "a", units, exclude_a), prepare_layers(XBs, "b", units, exclude_b)
    if next(iter(A.values())).n_units != next(iter(B.values())).n_units:
        raise SaematchError("models A and B cover different units")
    pairs = list(pairs) if pairs is not None else [(a, b) for a in A for b in B]
    unknown = [p for p in pairs if p[0] not in A or p[1] not in B]
    if unknown:
        raise SaematchError(f"layer pairs with no activations: {unknown[:5]}")
    opts = dict(k=k, k_max=k_max, max_rounds=max_rounds)
    lists = _DeviceLists(A, B, device, k_max) if backend == "torch" else None
    res = GridResult()
    if workers <= 1:
        _Sides.set(A, B)
        for p in pairs:
            _collect(res, _solve_pair(p, lists.of(p) if lists else None, opts))
        return res
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="saematch-grid-") as tmp:
        store = _save(A, B, Path(tmp))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(store, threads)) as pool:
            pending: set = set()
            for p in pairs:
                pending.add(pool.submit(_solve_pair, p, lists.of(p) if lists else None, opts))
                while lists is not None and len(pending) >= 2 * workers:  # the device runs ahead of the solves
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        _collect(res, f.result())
            for f in pending:
                _collect(res, f.result())
    order = {p: i for i, p in enumerate(pairs)}
    res.log.sort(key=lambda g: order[(g.layer_a, g.layer_b)])
    res.assignments = {p: res.assignments[p] for p in pairs}
    return res


def _collect(res: GridResult, done: tuple[Assignment, PairLog]) -> None:
    a, g = done
    res.assignments[(g.layer_a, g.layer_b)] = a
    res.log.append(g)


class _DeviceLists:
    """Top lists computed with torch on the device, in the main process (every layer moved there once)."""

    def __init__(self, A: dict, B: dict, device: str, k_max: int):
        from saematch.matching.gpu import TorchSide

        self.A = {la: TorchSide(s, device) for la, s in A.items()}
        self.B = {lb: TorchSide(s, device) for lb, s in B.items()}
        self.device, self.k_max = device, k_max

    def of(self, pair: tuple[Layer, Layer]) -> tuple[TopLists, float, float]:
        from saematch.matching.gpu import TorchCorr

        t, c = time.perf_counter(), time.process_time()
        top = TorchCorr(self.A[pair[0]], self.B[pair[1]], self.device).top_lists(self.k_max)
        return top, time.perf_counter() - t, time.process_time() - c


class _Sides:
    """The prepared layers in this process (set in place, or loaded from the grid's temporary store)."""

    A: dict = {}
    B: dict = {}

    @classmethod
    def set(cls, A: dict, B: dict) -> None:
        cls.A, cls.B = A, B


def _save(A: dict, B: dict, root: Path) -> dict:
    """Write every side's arrays as .npy under ``root``; returns what workers need to memory-map them."""
    index: dict[str, dict] = {"a": {}, "b": {}}
    for name, sides in (("a", A), ("b", B)):
        for i, (layer, s) in enumerate(sides.items()):
            d = root / f"{name}{i}"
            d.mkdir()
            for f in _FIELDS:
                np.save(d / f"{f}.npy", getattr(s, f))
            index[name][layer] = (str(d), s.n_units)
    return index


def _init_worker(store: dict, threads: int) -> None:  # pragma: no cover - runs in the pool's processes
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    def load(entries):
        return {layer: Side(*(np.asarray(np.load(Path(d) / f"{f}.npy", mmap_mode="r")) for f in _FIELDS), n)
                for layer, (d, n) in entries.items()}

    _Sides.set(load(store["a"]), load(store["b"]))


def _solve_pair(pair: tuple[Layer, Layer], lists: tuple[TopLists, float, float] | None,
                opts: dict[str, Any]) -> tuple[Assignment, PairLog]:
    """One pair: the top lists (unless the device made them), then the certified solve."""
    la, lb = pair
    rows = CorrRows.of_sides(_Sides.A[la], _Sides.B[lb])
    if lists is not None:
        top, corr_s, corr_cpu = lists
    else:
        t, c = time.perf_counter(), time.process_time()
        top = top_lists(rows, opts["k_max"])
        corr_s, corr_cpu = time.perf_counter() - t, time.process_time() - c
    exact = _RowCache(rows)
    t, c = time.perf_counter(), time.process_time()
    k = opts["k"]
    res = hungarian_sparse(top.graph(k), candidates_k=k, max_rounds=opts["max_rounds"], bounds=top.bounds(),
                           corr_rows=exact, solver="ssp", known=top.graph())
    solve_s, solve_cpu = time.perf_counter() - t, time.process_time() - c
    return res, PairLog(la, lb, k, res.rounds, res.gap, exact.computed, corr_s, solve_s, corr_cpu, solve_cpu)


class _RowCache:
    """Exact correlation rows of one pair, each computed once: the certificate asks for the same rows round after round.

    Rows are kept as their positive entries (all the certificate reads) while
    ``budget`` entries last; beyond it, rows are recomputed.
    """

    def __init__(self, rows: CorrRows, budget: int = 1 << 24):
        self.rows, self.budget, self.computed = rows, budget, 0
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        out = np.zeros((len(idx), self.rows.shape[1]), np.float32)
        miss = np.array([i not in self.cache for i in idx.tolist()], bool)
        if miss.any():
            C = self.rows.rows(idx[miss])
            self.computed += int(miss.sum())
            out[miss] = np.where(C > 0, C, 0)
            for i, row in zip(idx[miss].tolist(), out[miss]):
                if self.budget <= 0:
                    break
                j = np.nonzero(row)[0].astype(np.int32)
                self.cache[i] = (j, row[j])
                self.budget -= len(j)
        for n in np.nonzero(~miss)[0]:
            j, w = self.cache[int(idx[n])]
            out[n, j] = w
        return out
