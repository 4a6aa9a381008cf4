"""Run each model over its corpus windows and write aligned residual rows.

Work is split by shard: shard k holds unit rows ``[k*S, (k+1)*S)`` for every
configured layer.  Under ``torchrun`` each rank takes the shards with
``k % world_size == rank`` and writes them itself; rank 0 writes the manifests
after a barrier.  Finished shards are skipped, so a killed run resumes.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from saematch.activations.store import STORE_DTYPES, finish_layer, shard_done, write_shard
from saematch.adapter import ModelAdapter
from saematch.artifacts import RunLayout, Stage
from saematch.config import ExtractConfig, ModelSpec
from saematch.corpus import Corpus
from saematch.errors import SaematchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Rank and world size as set by torchrun (1 process when unset)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            dist.barrier()


@dataclass(frozen=True)
class ExtractResult:
    """Rows written per (model, layer) and shards computed in this call."""

    model: str
    n_rows: int
    shards_written: int
    shards_skipped: int


def extract_model(
    corpus: Corpus,
    spec: ModelSpec,
    load: Callable[[], ModelAdapter],
    cfg: ExtractConfig,
    layout: RunLayout,
    chash: str,
    dist: DistInfo = DistInfo(),
    token_key: str | None = None,
    embed: bool = False,
) -> ExtractResult:
    """Write every configured layer of ``spec`` for all aligned units.

    token_key: whose corpus tokens to feed (default ``spec.key``): a random-init
    control reads its source model's tokens and writes under its own key.
    embed: write the residual entering block 0 (the input embeddings) as ``spec``'s one layer.
    """
    tk = token_key or spec.key
    n_rows = corpus.n_units
    S = cfg.shard_units
    n_shards = -(-n_rows // S)
    pending = [la for la in spec.layers if not Stage(layout.acts(spec.key, la)).is_complete(chash, verify=False)]
    if not pending:
        return ExtractResult(spec.key, n_rows, 0, n_shards)
    roots = {layer: layout.acts(spec.key, layer) for layer in pending}
    mine = [k for k in range(n_shards) if k % dist.world == dist.rank]
    todo = [k for k in mine if not all(shard_done(roots[la], k, min(S, n_rows - k * S), chash) for la in pending)]
    adapter = load() if todo else None
    if adapter is not None and not embed:
        adapter.check_layers(spec.layers)
    for root in roots.values():  # only now, with the work known to be valid, drop stale manifests
        root.mkdir(parents=True, exist_ok=True)
        Stage(root).invalidate()
    written = 0
    if adapter is not None:
        windows = corpus.windows(tk)
        ids = corpus.token_ids(tk)
        prefix = corpus.prefix(tk)
        win_U, pos_U = corpus.unit_windows(tk)
        for k in tqdm(todo, desc=f"extract {spec.key}", unit="shard", disable=None):
            lo, hi = k * S, min((k + 1) * S, n_rows)
            rows = _shard_rows(adapter, windows, ids, prefix, win_U[lo:hi], pos_U[lo:hi], pending, cfg, embed)
            for layer, acts in rows.items():
                write_shard(roots[layer], k, acts, chash)
            written += 1
            log.info("extract %s: shard %d/%d", spec.key, k + 1, n_shards)
    dist.barrier()
    if dist.rank == 0:
        for layer, root in roots.items():
            finish_layer(
                root, chash, n_rows, S, model=spec.name, model_key=spec.key, layer=layer,
                hook="blocks.0.hook_resid_pre" if embed else ModelAdapter.hook_name(layer), d_model=_width(root),
                dtype=cfg.store_dtype,
            )
    return ExtractResult(spec.key, n_rows, written, n_shards - written)


def _width(root) -> int:
    from safetensors import safe_open

    with safe_open(str(root / "shard_00000.safetensors"), "pt") as fh:
        return int(fh.get_slice("acts").get_shape()[1])


def _shard_rows(
    adapter: ModelAdapter, windows: list, ids: list[np.ndarray], prefix: list[int],
    win_R: np.ndarray, pos_R: np.ndarray, layers: list[int], cfg: ExtractConfig, embed: bool = False,
) -> dict[int, torch.Tensor]:
    """Activations ``{layer: [rows, d]}`` for the units whose (window, position) are given."""
    need = np.unique(win_R)
    by_len: dict[int, list[int]] = defaultdict(list)
    for w in need:
        by_len[windows[w].stop - windows[w].start].append(int(w))
    dtype = STORE_DTYPES[cfg.store_dtype]
    out = {layer: torch.empty(len(win_R), adapter.d_model, dtype=dtype) for layer in layers}
    for group in by_len.values():  # equal-length windows batch with no padding
        for b in range(0, len(group), cfg.batch_size):
            ws = group[b:b + cfg.batch_size]
            batch = torch.tensor(
                np.stack([np.concatenate([prefix, ids[windows[w].doc][windows[w].start:windows[w].stop]]) for w in ws]),
                dtype=torch.long,
            )
            acts = {layers[0]: adapter.resid_pre0(batch)} if embed else adapter.resid_post(batch, list(layers))
            slot = {w: i for i, w in enumerate(ws)}
            sel = np.nonzero(np.isin(win_R, ws))[0]
            bi = torch.tensor([slot[int(w)] for w in win_R[sel]], dtype=torch.long)
            pi = torch.from_numpy(pos_R[sel])
            for layer, x in acts.items():
                rows = x[bi, pi].float().cpu()
                if not torch.isfinite(rows).all():
                    raise SaematchError(
                        f"model '{adapter.name}' produced NaN or infinite activations at layer {layer}; "
                        f"try extract.dtype=float32"
                    )
                out[layer][torch.from_numpy(sel)] = rows.to(dtype)
    return out
