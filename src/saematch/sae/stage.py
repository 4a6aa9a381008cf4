"""The SAE node: for one (model, layer), train or load an SAE and write eval.json.

Layout of ``RUN/saes/<model>/layer_LL/``: SAELens' ``cfg.json`` and
``sae_weights.safetensors`` (openable with ``sae_lens.SAE.load_from_disk``),
``eval.json``, ``checkpoint.safetensors`` while training, and the manifest last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from saematch.activations import LayerStore
from saematch.adapter import ModelAdapter
from saematch.artifacts import Stage, write_json
from saematch.config import ModelSpec, SAEConfig
from saematch.corpus import Corpus
from saematch.devices import stage_device
from saematch.logger import Logger, NullLogger
from saematch.sae.evaluate import LossProbe, SAEEval, reconstruction_stats
from saematch.sae.load import check_fits, load_pretrained, load_sae_dir
from saematch.sae.train import CKPT, train_sae

log = logging.getLogger(__name__)


def n_train_rows(n_rows: int, cfg: SAEConfig) -> int:
    """Rows ``[0, n_train)`` train the SAE; the rest are held out for eval."""
    return int(n_rows * (1 - cfg.eval_fraction))


def loss_batch(corpus: Corpus, model: str, n_windows: int, docs: Optional[set] = None) -> Optional[torch.Tensor]:
    """The last ``n_windows`` full-length windows as ``[B, T]`` ids: of the documents ``docs`` (the SAE eval
    documents of the run's split, which no SAE trains on), else of the whole corpus."""
    if n_windows <= 0:
        return None
    ids, prefix = corpus.token_ids(model), corpus.prefix(model)
    full = [w for w in corpus.windows(model) if w.stop - w.start == corpus.window and (docs is None or w.doc in docs)]
    if not full:
        return None
    rows = [prefix + ids[w.doc][w.start:w.stop].tolist() for w in full[-n_windows:]]
    return torch.tensor(rows, dtype=torch.long)


def evaluate_sae(
    sae: Any, store: LayerStore, cfg: SAEConfig, layer: int, probe: Optional[LossProbe], scale: Optional[float] = None,
    device: str = "cpu", eval_rows: Optional[np.ndarray] = None,
) -> SAEEval:
    """Reconstruction quality on the held-out rows (``eval_rows``: the SAE eval documents of the run's split;
    default the last ``eval_fraction`` of the rows), and the LM-loss splice when ``probe`` is given, on
    ``device`` (the probe's model sits on the same device)."""
    sae = sae.float().to(device)
    ev = reconstruction_stats(sae, store, n_train_rows(store.n_rows, cfg), store.n_rows, rows=eval_rows)
    extra: dict[str, Any] = {"scale": scale}
    if probe is not None:
        extra.update(probe(sae, layer))
    return SAEEval(**{**ev.to_dict(), **extra})


def sae_for_layer(
    spec: ModelSpec, layer: int, store: LayerStore, cfg: SAEConfig, out: Path, chash: str,
    probe: Optional[LossProbe], logger: Logger = NullLogger(), device: str = "cpu",
    fit_rows: Optional[np.ndarray] = None, eval_rows: Optional[np.ndarray] = None, split_digest: Optional[str] = None,
) -> SAEEval:
    """Train (or load) and evaluate one SAE, writing it atomically under ``out``.

    fit_rows / eval_rows: sorted unit indices it trains and is evaluated on (the fit and SAE eval documents of the
    run's split, whose ``split_digest`` goes in the manifest); default the first and last rows of the store."""
    stage = Stage(out)
    stage.invalidate()
    prefix = f"{spec.key}/L{layer}/"
    if spec.pretrained:
        sae, source = load_pretrained(spec, layer)
        check_fits(sae, spec, layer, store.d_model, source)
        tmp = out / "sae.partial"
        sae.save_model(str(tmp)) if not hasattr(sae, "save_inference_model") else sae.save_inference_model(str(tmp))
        for name in ("cfg.json", "sae_weights.safetensors"):
            (tmp / name).replace(out / name)
        tmp.rmdir()
        sae, scale = load_sae_dir(out), None
        run: dict[str, Any] = {"device": device}
    else:
        rows = n_train_rows(store.n_rows, cfg) if fit_rows is None else fit_rows
        res = train_sae(store, cfg, out, rows, ModelAdapter.hook_name(layer), logger, prefix, device)
        sae, scale = res.sae, res.scale
        run = {"device": res.device, "kernels": res.kernels, "feed_share": res.feed_share}
    ev = evaluate_sae(sae, store, cfg, layer, probe, scale, device, eval_rows)
    write_json(out / "eval.json", ev.to_dict())
    logger.log({f"{prefix}eval/{k}": v for k, v in ev.to_dict().items() if v is not None})
    stage.finish(chash, [out / "cfg.json", out / "sae_weights.safetensors", out / "eval.json"],
                 model=spec.name, layer=layer, scale=scale, pretrained=spec.pretrained, training=run,
                 split_digest=split_digest, n_fit_rows=None if fit_rows is None else int(len(fit_rows)),
                 n_eval_rows=None if eval_rows is None else int(len(eval_rows)))
    (out / CKPT).unlink(missing_ok=True)
    log.info("SAE %s: FVU %.3f, L0 %.1f, dead %.1f%%, loss recovered %s", prefix.rstrip("/"), ev.fvu, ev.l0,
             100 * ev.dead_frac, "n/a" if ev.loss_recovered is None else f"{ev.loss_recovered:.3f}")
    return ev


def _probe(ctx: Any, spec: ModelSpec, device: str) -> Optional[LossProbe]:
    """The model's LM-loss probe on ``device``, made once per run (its clean loss is shared by the layers)."""

    def make() -> Optional[LossProbe]:
        eval_docs = set(np.unique(ctx.corpus.units["doc"].to_numpy()[ctx.split.sae_eval_mask]).tolist())
        ids = loss_batch(ctx.corpus, spec.key, ctx.cfg.sae.loss_windows, eval_docs)
        return None if ids is None else LossProbe(lambda: ctx.model(spec, device), ids, len(ctx.corpus.prefix(spec.key)))

    return ctx.memo(("loss-probe", spec.key, device), make)


def build(node: Any, ctx: Any, chash: str) -> None:
    """Train (or load) and evaluate the SAE of node ``train:MODEL:LAYER``."""
    import dataclasses

    from saematch.graph.plan import variant

    key, layer = node.key
    var = variant(key)
    spec = ctx.spec(key)
    cfg = ctx.cfg.sae
    if ctx.cfg.sae.threads:
        torch.set_num_threads(ctx.cfg.sae.threads)
    device = stage_device(ctx.cfg, "sae")
    probe = _probe(ctx, spec, device) if var.kind == "model" else None  # controls: no LM-loss splice (documented)
    if var.kind == "twin":
        cfg = dataclasses.replace(cfg, seed=ctx.cfg.controls.twin_seed)
    if var.kind != "model":
        spec = dataclasses.replace(spec, label=key, sae_release=None, sae_id=None, sae_path=None)
    split = ctx.split
    fit = np.flatnonzero(split.fit_mask)
    if not spec.pretrained and len(fit) < cfg.batch_size:
        from saematch.errors import SaematchError

        raise SaematchError(f"SAE {key} L{layer}: the fit documents of the split hold {len(fit)} units, fewer than one "
                            f"batch of sae.batch_size={cfg.batch_size}; raise corpus.max_tokens or lower sae.batch_size")
    sae_for_layer(spec, layer, ctx.store(key, layer), cfg, node.path, chash, probe, ctx.logger, device,
                  fit, np.flatnonzero(split.sae_eval_mask), split.digest)


def reevaluate(node: Any, ctx: Any) -> SAEEval:
    """Rewrite the eval.json of a built SAE node (its weights and config hash are kept)."""
    from saematch.artifacts import Stage

    key, layer = node.key
    stage = Stage(node.path)
    man = stage.manifest()
    device = stage_device(ctx.cfg, "sae")
    ev = evaluate_sae(load_sae_dir(node.path), ctx.store(key, layer), ctx.cfg.sae, layer,
                      _probe(ctx, ctx.spec(key), device), man.get("scale"), device, np.flatnonzero(ctx.split.sae_eval_mask))
    write_json(node.path / "eval.json", ev.to_dict())
    stage.finish(man["config_hash"], [node.path / "cfg.json", node.path / "sae_weights.safetensors", node.path / "eval.json"],
                 **{k: v for k, v in man.items() if k not in {"config_hash", "files"}})
    return ev
