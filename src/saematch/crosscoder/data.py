"""Aligned inputs for a crosscoder: activation stores or in-memory arrays, one per model.

Row i of every source is the same aligned unit.  Training reads only a given set of units (in a run,
the train documents of the run's split) and the analysis only another (the test documents).  Training batches come from
each source's own ``batches`` with one seed: :class:`LayerStore` shuffles
shards and rows with an RNG that depends only on the seed, the epoch and the
row counts, so stores with the same row count and shard size yield the same
rows in the same order, batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch

from saematch.activations import LayerStore
from saematch.errors import ArtifactError, SaematchError


@dataclass(frozen=True)
class ArraySource:
    """An in-memory ``[N, d_model]`` float32 activation matrix with the store's read interface."""

    acts_ND: torch.Tensor

    @property
    def n_rows(self) -> int:
        return int(self.acts_ND.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.acts_ND.shape[1])

    @property
    def root(self) -> Path:
        return Path("<array>")

    def read_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.acts_ND[max(0, start):min(stop, self.n_rows)].float()

    def take(self, rows: np.ndarray) -> torch.Tensor:
        return self.acts_ND[torch.from_numpy(np.asarray(rows, np.int64))].float()

    def iter_rows(self, start: int, stop: int, batch: int) -> Iterator[torch.Tensor]:
        for s in range(start, stop, batch):
            yield self.read_rows(s, min(s + batch, stop))

    def iter_take(self, rows: np.ndarray, batch: int) -> Iterator[torch.Tensor]:
        rows = np.asarray(rows, np.int64)
        for s in range(0, len(rows), batch):
            yield self.take(rows[s:s + batch])

    def batches(self, batch: int, start: int = 0, stop: int | None = None, seed: int = 0,
                loop: bool = True, scale: float = 1.0, skip: int = 0, rows: np.ndarray | None = None
                ) -> Iterator[torch.Tensor]:
        """Shuffled full batches of rows ``rows`` (default ``[start, stop)``), reshuffled each epoch (the
        remainder is dropped); no other row is ever read into a batch."""
        stop = self.n_rows if stop is None else stop
        rows = np.arange(start, stop, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if len(rows) < batch:
            raise ArtifactError(f"{len(rows)} training rows, fewer than one batch of {batch}")
        produced, epoch = 0, 0
        while True:
            perm = rows[np.random.default_rng([seed, epoch]).permutation(len(rows))]
            for b in range(len(perm) // batch):
                if produced >= skip:
                    yield self.acts_ND[torch.from_numpy(perm[b * batch:(b + 1) * batch])].float() * scale
                produced += 1
            epoch += 1
            if not loop:
                return


@dataclass(frozen=True)
class AffineSource:
    """Another source seen through a fixed affine map ``x @ W + b`` (``W [d_in, d_out]``), applied to every row it
    reads.  Its batches are the base source's batches, mapped, so its rows stay aligned with sources of the
    base's kind."""

    base: "LayerStore | ArraySource"
    W: torch.Tensor
    b: torch.Tensor

    @property
    def n_rows(self) -> int:
        return self.base.n_rows

    @property
    def d_model(self) -> int:
        return int(self.W.shape[1])

    @property
    def root(self) -> Path:
        return self.base.root

    @property
    def shard_units(self) -> int:
        return self.base.shard_units

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W + self.b

    def read_rows(self, start: int, stop: int) -> torch.Tensor:
        return self._map(self.base.read_rows(start, stop))

    def take(self, rows: np.ndarray) -> torch.Tensor:
        return self._map(self.base.take(rows))

    def iter_rows(self, start: int, stop: int, batch: int) -> Iterator[torch.Tensor]:
        yield from (self._map(x) for x in self.base.iter_rows(start, stop, batch))

    def iter_take(self, rows: np.ndarray, batch: int) -> Iterator[torch.Tensor]:
        yield from (self._map(x) for x in self.base.iter_take(rows, batch))

    def batches(self, batch: int, start: int = 0, stop: int | None = None, seed: int = 0, loop: bool = True,
                scale: float = 1.0, skip: int = 0, rows: np.ndarray | None = None) -> Iterator[torch.Tensor]:
        its = self.base.batches(batch, start, stop, seed=seed, loop=loop, skip=skip, rows=rows)
        yield from (self._map(x) * scale for x in its)


Source = Union[LayerStore, ArraySource, AffineSource]
SourceLike = Union[LayerStore, ArraySource, AffineSource, str, Path, np.ndarray, torch.Tensor]


def _kind(s: Source) -> type:
    """What decides a source's shuffle: its own type, or its base's for an :class:`AffineSource`."""
    return _kind(s.base) if isinstance(s, AffineSource) else type(s)


def as_sources(inputs: Sequence[SourceLike]) -> list[Source]:
    """Stores, store folders or ``[N, d]`` arrays as checked, aligned sources (same kind, same rows)."""
    out: list[Source] = []
    for x in inputs:
        if isinstance(x, (str, Path)):
            x = LayerStore.open(x)
        elif isinstance(x, np.ndarray):
            x = ArraySource(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        elif isinstance(x, torch.Tensor):
            x = ArraySource(x.detach().float())
        if isinstance(x, ArraySource) and x.acts_ND.ndim != 2:
            raise SaematchError(f"crosscoder inputs must be [units, d_model] matrices, got shape {tuple(x.acts_ND.shape)}")
        out.append(x)
    if len(out) < 2:
        raise SaematchError(f"a crosscoder needs at least two models, got {len(out)}")
    if len({_kind(s) for s in out}) != 1:
        raise SaematchError("crosscoder inputs mix activation stores and arrays; pass one kind")
    if len({s.n_rows for s in out}) != 1:
        raise SaematchError(f"crosscoder inputs cover different unit counts: {[s.n_rows for s in out]}")
    if _kind(out[0]) is LayerStore and len({s.shard_units for s in out}) != 1:
        raise SaematchError("crosscoder stores have different shard sizes, so their shuffles would not align")
    return out


def check_rows(rows: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    """``rows`` as sorted, unique int64 unit indices inside ``[0, n_rows)``; one clear error otherwise."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if len(rows) != n_rows:
            raise SaematchError(f"{what}: a mask of {len(rows)} units for {n_rows} units")
        rows = np.nonzero(rows)[0]
    rows = np.unique(rows.astype(np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_rows):
        raise SaematchError(f"{what}: unit indices outside [0, {n_rows})")
    return rows


def aligned_batches(sources: Sequence[Source], batch: int, rows: np.ndarray, seed: int, scales: Sequence[float],
                    skip: int = 0) -> Iterator[list[torch.Tensor]]:
    """Endless aligned ``[batch, d_m]`` batches of the units ``rows`` only, scaled; ``skip`` batches dropped first."""
    its = [s.batches(batch, seed=seed, scale=float(c), skip=skip, rows=rows) for s, c in zip(sources, scales)]
    while True:
        yield [next(it) for it in its]


def aligned_take(sources: Sequence[Source], rows: np.ndarray, batch: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive aligned float32 batches of the sorted units ``rows`` in the models' own units."""
    its = [s.iter_take(rows, batch) for s in sources]
    yield from (list(xs) for xs in zip(*its))


def input_stats(source: Source, rows: np.ndarray, batch: int = 4096) -> tuple[float, torch.Tensor]:
    """Centred mean squared norm ``E||x - mu||^2`` and the mean row ``mu [d]`` over the units ``rows``, streamed."""
    total, n = 0.0, 0
    mean = torch.zeros(source.d_model, dtype=torch.float64)
    for x in source.iter_take(rows, batch):
        total += float(x.double().pow(2).sum())
        mean += x.double().sum(0)
        n += len(x)
    if n == 0 or not np.isfinite(total):
        raise ArtifactError(f"{source.root}: no usable (finite) rows to estimate the activation scale")
    mean /= n
    var = total / n - float(mean.pow(2).sum())
    if var <= 1e-12 * max(total / n, 1e-300):
        raise ArtifactError(f"{source.root}: activations do not vary over the training units; no scale to estimate")
    return var, mean.float()
