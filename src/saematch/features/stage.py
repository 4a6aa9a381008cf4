"""The features node of one (model, layer): sparse activations of its SAE and feature cards."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def build(node: Any, ctx: Any, chash: str) -> None:
    from saematch.artifacts import Stage
    from saematch.devices import stage_device
    from saematch.features.cards import feature_cards
    from saematch.features.encode import encode_sparse, save_csr
    from saematch.matching.store import write_parquet
    from saematch.sae.load import load_sae_dir

    key, layer = node.key
    cfg = ctx.cfg.features
    out = node.path
    stage = Stage(out)
    device = stage_device(ctx.cfg, "features")
    sae = load_sae_dir(ctx.layout.sae(key, layer)).to(device)
    enc = encode_sparse(sae, ctx.store(key, layer), cfg.encode_batch, max_active=cfg.max_active)
    if cfg.max_active is not None:
        log.warning("features %s L%d: features.max_active=%d cut %d of %d units (largest L0 %d); recorded in the manifest",
                    key, layer, cfg.max_active, enc.n_truncated, enc.X.shape[0], enc.max_l0)
    corpus = ctx.corpus
    cards = feature_cards(enc.X, corpus.units, corpus.texts, cfg.top_contexts, cfg.context_chars, cfg.dense_threshold,
                          key, layer)
    stage.invalidate()
    write_parquet(cards, out / "cards.parquet")
    save_csr(out, enc.X)
    stage.finish(chash, [out / "acts.safetensors", out / "cards.parquet"], n_units=enc.X.shape[0], d_sae=enc.X.shape[1],
                 nnz=int(enc.X.nnz), max_l0=enc.max_l0, max_active=cfg.max_active, n_truncated=enc.n_truncated,
                 dead=int(cards["dead"].sum()), dense=int(cards["dense"].sum()))
