"""Aligned inputs for a crosscoder: activation stores or in-memory arrays, one per model.

Row i of every source is the same aligned unit.  Training batches come from
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

    def iter_rows(self, start: int, stop: int, batch: int) -> Iterator[torch.Tensor]:
        for s in range(start, stop, batch):
            yield self.read_rows(s, min(s + batch, stop))

    def batches(self, batch: int, start: int = 0, stop: int | None = None, seed: int = 0,
                loop: bool = True, scale: float = 1.0, skip: int = 0) -> Iterator[torch.Tensor]:
        """Shuffled full batches of rows ``[start, stop)``, reshuffled each epoch (the remainder is dropped)."""
        stop = self.n_rows if stop is None else stop
        if stop - start < batch:
            raise ArtifactError(f"{stop - start} rows, fewer than one batch of {batch}")
        produced, epoch = 0, 0
        while True:
            perm = np.random.default_rng([seed, epoch]).permutation(stop - start) + start
            for b in range(len(perm) // batch):
                if produced >= skip:
                    yield self.acts_ND[torch.from_numpy(perm[b * batch:(b + 1) * batch])].float() * scale
                produced += 1
            epoch += 1
            if not loop:
                return


Source = Union[LayerStore, ArraySource]
SourceLike = Union[LayerStore, ArraySource, str, Path, np.ndarray, torch.Tensor]


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
    if len({type(s) for s in out}) != 1:
        raise SaematchError("crosscoder inputs mix activation stores and arrays; pass one kind")
    if len({s.n_rows for s in out}) != 1:
        raise SaematchError(f"crosscoder inputs cover different unit counts: {[s.n_rows for s in out]}")
    if isinstance(out[0], LayerStore) and len({s.shard_units for s in out}) != 1:
        raise SaematchError("crosscoder stores have different shard sizes, so their shuffles would not align")
    return out


def aligned_batches(sources: Sequence[Source], batch: int, stop: int, seed: int, scales: Sequence[float],
                    skip: int = 0) -> Iterator[list[torch.Tensor]]:
    """Endless aligned ``[batch, d_m]`` batches of rows ``[0, stop)``, scaled; ``skip`` batches dropped first."""
    its = [s.batches(batch, 0, stop, seed=seed, scale=float(c), skip=skip) for s, c in zip(sources, scales)]
    while True:
        yield [next(it) for it in its]


def aligned_rows(sources: Sequence[Source], start: int, stop: int, batch: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive aligned float32 batches of rows ``[start, stop)`` in the models' own units."""
    its = [s.iter_rows(start, stop, batch) for s in sources]
    yield from (list(xs) for xs in zip(*its))


def input_stats(source: Source, stop: int, batch: int = 4096) -> tuple[float, torch.Tensor]:
    """Centred mean squared norm ``E||x - mu||^2`` and the mean row ``mu [d]`` over rows ``[0, stop)``, streamed."""
    total, n = 0.0, 0
    mean = torch.zeros(source.d_model, dtype=torch.float64)
    for x in source.iter_rows(0, stop, batch):
        total += float(x.double().pow(2).sum())
        mean += x.double().sum(0)
        n += len(x)
    if n == 0 or not np.isfinite(total):
        raise ArtifactError(f"{source.root}: no usable (finite) rows to estimate the activation scale")
    mean /= n
    var = total / n - float(mean.pow(2).sum())
    if var <= 1e-12 * max(total / n, 1e-300):
        raise ArtifactError(f"{source.root}: activations do not vary over rows [0, {stop}); no scale to estimate")
    return var, mean.float()
