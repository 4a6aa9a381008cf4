"""The extract node of one model: every configured layer's activations in one pass."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def preflight(node: Any, ctx: Any) -> None:
    """Fail before any artifact is touched when a layer is out of the model's range."""
    from saematch.graph.plan import variant

    if variant(node.key[0]).kind == "embed":  # the input embeddings: no block to range-check
        return
    spec = ctx.spec(node.key[0])
    n = ctx.n_layers(spec)
    bad = [la for la in spec.layers if la >= n]
    if bad:
        raise SaematchError(f"layer {bad[0]} is out of range for model '{spec.name}', which has {n} blocks "
                            f"(valid layers: 0..{n - 1})")


def build(node: Any, ctx: Any, chash: str) -> None:
    import torch

    from saematch.activations.extract import DistInfo, extract_model
    from saematch.devices import stage_device
    from saematch.graph.plan import EMBED_LAYER, variant

    cfg = ctx.cfg
    var = variant(node.key[0])
    src = ctx.spec(var.key)
    spec = src
    if var.kind in ("random", "embed"):  # writes under its own key
        spec = dataclasses.replace(src, label=var.key, layers=(EMBED_LAYER,) if var.kind == "embed" else src.layers)
    if cfg.extract.threads:
        torch.set_num_threads(cfg.extract.threads)
    dist = DistInfo.from_env()
    device = stage_device(cfg, "extract")  # under torchrun, cuda means the rank's own GPU
    ctx.forget_stores(spec.key)
    random_init = var.kind == "random"
    res = extract_model(ctx.corpus, spec, lambda: ctx.model(src, device, random_init), cfg.extract, ctx.layout, chash,
                        dist, token_key=src.key, embed=var.kind == "embed")
    log.info("extract %s: %d rows, %d shards written, %d reused", spec.key, res.n_rows, res.shards_written,
             res.shards_skipped)
