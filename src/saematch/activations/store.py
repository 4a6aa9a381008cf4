"""Sharded on-disk activation store, one folder per (model, layer).

Layout of ``RUN/acts/<model>/layer_LL/``::

    shard_00000.safetensors   {"acts": [rows, d_model]} in bf16/fp16
    shard_00000.json          size + SHA-256 of the shard (written after it)
    manifest.json             config hash, model, layer, dtype, n_rows, shards (written last)

Shard k always holds unit rows ``[k * shard_units, (k + 1) * shard_units)``, so a
shard is a unit of work and of resumption: a killed extract redoes only the
shards with no valid sidecar.  Readers check sizes and digests and refuse a
torn shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saematch.artifacts import Stage, atomic_path, file_record, read_json, verify_record, write_json
from saematch.errors import ArtifactError

STORE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.safetensors"


def write_shard(root: Path, k: int, acts_RD: torch.Tensor, config_hash: str = "") -> None:
    """Write shard ``k`` atomically, then its sidecar record (with the config hash that made it)."""
    path = root / shard_name(k)
    with atomic_path(path) as tmp:
        save_file({"acts": acts_RD.contiguous()}, str(tmp))
    write_json(root / f"shard_{k:05d}.json", {**file_record(path, root), "config_hash": config_hash})


def shard_done(root: Path, k: int, rows: int, config_hash: str = "") -> bool:
    """True when shard ``k`` exists, matches its sidecar and config hash, and has ``rows`` rows."""
    side = root / f"shard_{k:05d}.json"
    if not side.is_file():
        return False
    try:
        rec = read_json(side)
        if rec.get("config_hash", "") != config_hash:
            return False
        verify_record(root, rec, digest=True)
        return _load(root / shard_name(k)).shape[0] == rows
    except (ArtifactError, KeyError):
        return False


def _load(path: Path) -> torch.Tensor:
    try:
        return load_file(str(path))["acts"]
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"torn or corrupt activation shard {path}: {exc}") from None


def finish_layer(root: Path, config_hash: str, n_rows: int, shard_units: int, **meta: object) -> None:
    """Write the layer manifest once every shard is present and valid."""
    n_shards = -(-n_rows // shard_units)
    files = []
    for k in range(n_shards):
        rows = min(shard_units, n_rows - k * shard_units)
        if not shard_done(root, k, rows, config_hash):
            raise ArtifactError(f"shard {k} of {root} is missing or torn; rerun extract")
        files.append(root / shard_name(k))
    Stage(root).finish(config_hash, files, n_rows=n_rows, shard_units=shard_units, **meta)


@dataclass(frozen=True)
class LayerStore:
    """Read side of one (model, layer) folder."""

    root: Path
    n_rows: int
    d_model: int
    shard_units: int
    dtype: str
    meta: dict

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> "LayerStore":
        root = Path(root)
        man = Stage(root).manifest()
        for rec in man["files"]:
            verify_record(root, rec, digest=verify)
        return cls(root, int(man["n_rows"]), int(man["d_model"]), int(man["shard_units"]), man["dtype"], man)

    @property
    def n_shards(self) -> int:
        return len(self.meta["files"])

    def shard(self, k: int) -> torch.Tensor:
        """Rows of shard k as stored (bf16/fp16), checked for non-finite values."""
        x = _load(self.root / self.meta["files"][k]["file"])
        return x

    def read_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as float32 ``[stop - start, d_model]``."""
        start, stop = max(0, start), min(stop, self.n_rows)
        parts = []
        k0, k1 = start // self.shard_units, (stop - 1) // self.shard_units if stop > start else -1
        for k in range(k0, k1 + 1):
            base = k * self.shard_units
            x = self.shard(k)
            parts.append(x[max(start - base, 0): stop - base])
        if not parts:
            return torch.zeros(0, self.d_model)
        return torch.cat(parts).float()

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Float32 rows at sorted indices ``rows``, reading one shard at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        out = torch.empty(len(rows), self.d_model)
        shard_of = rows // self.shard_units
        for k in np.unique(shard_of):
            sel = np.nonzero(shard_of == k)[0]
            x = self.shard(int(k))
            out[torch.from_numpy(sel)] = x[torch.from_numpy(rows[sel] - k * self.shard_units)].float()
        return out

    def iter_rows(self, start: int, stop: int, batch: int) -> Iterator[torch.Tensor]:
        """Consecutive float32 batches over rows ``[start, stop)``, one shard in memory at a time."""
        for s in range(start, stop, batch):
            yield self.read_rows(s, min(s + batch, stop))

    def iter_take(self, rows: np.ndarray, batch: int) -> Iterator[torch.Tensor]:
        """Float32 batches of the sorted row indices ``rows``, in order."""
        rows = np.asarray(rows, np.int64)
        for s in range(0, len(rows), batch):
            yield self.take(rows[s:s + batch])

    def batches(
        self, batch: int, start: int = 0, stop: int | None = None, seed: int = 0,
        loop: bool = True, scale: float = 1.0, skip: int = 0, in_memory: bool = False,
        rows: np.ndarray | None = None,
    ) -> Iterator[torch.Tensor]:
        """Shuffled float32 ``[batch, d_model]`` tensors over rows ``[start, stop)``, times ``scale``.

        ``rows`` (sorted indices) restricts the batches to those rows instead (the train documents of
        the run's split); no other row is ever read into a batch.
        Every batch has exactly ``batch`` rows (what SAELens' trainer needs).
        With ``loop`` it cycles forever through epochs, reshuffling each time.
        Memory holds one shard plus a carry-over of less than ``batch`` rows; with
        ``in_memory`` the rows read in the first epoch are kept (in the stored
        dtype) and later epochs read no file.  The batches are the same either way.
        ``skip`` drops that many batches first (used to resume deterministically).
        """
        stop = self.n_rows if stop is None else stop
        if rows is None:
            rows = np.arange(start, stop, dtype=np.int64)
        rows = np.asarray(rows, np.int64)
        if len(rows) < batch:
            raise ArtifactError(f"{self.root} has {len(rows)} training rows, fewer than one batch of {batch}")
        shard_of = rows // self.shard_units
        local = {int(k): rows[shard_of == k] - int(k) * self.shard_units for k in np.unique(shard_of)}
        epoch = 0
        carry = torch.zeros(0, self.d_model)
        produced = 0
        held: dict[int, torch.Tensor] = {}
        while True:
            rng = np.random.default_rng([seed, epoch])
            for k in rng.permutation(sorted(local)):
                k = int(k)
                if k in held:
                    x = held[k].float()
                else:
                    x = self.shard(k)[torch.from_numpy(local[k])].float()
                    if in_memory:
                        held[k] = x.to(STORE_DTYPES[self.dtype])
                x = x[torch.from_numpy(rng.permutation(len(x)))]
                x = torch.cat([carry, x])
                n_full = len(x) // batch
                for b in range(n_full):
                    if produced >= skip:
                        yield x[b * batch:(b + 1) * batch] * scale
                    produced += 1
                carry = x[n_full * batch:]
            epoch += 1
            if not loop:
                return


def fits_in_ram(store: LayerStore, rows: int, fraction: float = 0.25) -> bool:
    """True when ``rows`` rows of ``store`` (in their stored dtype) take less than ``fraction`` of the
    memory available now."""
    import os

    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    return rows * store.d_model * torch.empty(0, dtype=STORE_DTYPES[store.dtype]).element_size() < fraction * avail


def open_layer(root: str | Path, verify: bool = True) -> LayerStore:
    return LayerStore.open(root, verify=verify)


def aligned_rows(a: LayerStore, b: LayerStore, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[start, stop)`` of two stores over the same aligned units."""
    if a.n_rows != b.n_rows:
        raise ArtifactError(f"stores {a.root} and {b.root} hold different unit counts ({a.n_rows} vs {b.n_rows})")
    return a.read_rows(start, stop), b.read_rows(start, stop)
