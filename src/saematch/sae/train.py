"""Train one SAE per (model, layer) with SAELens' ``SAETrainer`` fed by our store.

The loop drives the trainer through its public ``step`` seam, so checkpoints
can be plain safetensors (SAELens' own trainer state uses ``torch.save``, a
pickle).  A checkpoint holds the SAE, the Adam moments and the dead-feature
counters; schedulers are restored by replaying their steps and the data stream
by skipping the batches already seen, so a resumed run ends with the same
weights as an uninterrupted one.

Activations are scaled by ``scale = sqrt(d_in / E||x||^2)`` for training and
the scale is folded into the weights before saving, so the saved SAE reads and
writes the model's own units.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saematch.activations import LayerStore
from saematch.activations.store import fits_in_ram
from saematch.artifacts import atomic_path
from saematch.config import SAEConfig
from saematch.devices import synchronize
from saematch.errors import ArtifactError
from saematch.logger import Logger, NullLogger
from saematch.sae import kernels
from saematch.sae.feed import Prefetcher

log = logging.getLogger(__name__)
CKPT = "checkpoint.safetensors"


def make_training_sae(cfg: SAEConfig, d_in: int, hook: str = "", device: str = "cpu") -> Any:
    """A fresh SAELens training SAE of the configured (registered) architecture, fp32 on ``device``;
    a TopK SAE gets the kernels ``cfg.kernel`` picks for the device and the batch shape."""
    common: dict[str, Any] = {"d_in": d_in, "d_sae": cfg.expansion * d_in, "dtype": "float32", "device": device}
    sae = cfg.training_sae(common)
    sae.cfg.metadata.hook_name = hook
    if hasattr(sae, "kernels"):
        sae.kernels = kernels.choose(cfg.kernel, device, cfg.batch_size, sae.cfg.k, d_in, sae.cfg.d_sae)
    return sae


def train_rows(rows: Union[int, np.ndarray]) -> np.ndarray:
    """Sorted training row indices: ``rows`` itself, or ``[0, rows)`` for a count."""
    if isinstance(rows, (int, np.integer)):
        return np.arange(int(rows), dtype=np.int64)
    return np.sort(np.asarray(rows, np.int64))


def activation_stats(store: LayerStore, rows: Union[int, np.ndarray], batch: int = 4096) -> tuple[float, torch.Tensor]:
    """``scale = sqrt(d_in / mean ||x||^2)`` and the mean row ``[d_in]`` over the training rows, streamed."""
    total, n = 0.0, 0
    mean = torch.zeros(store.d_model, dtype=torch.float64)
    for x in store.iter_take(train_rows(rows), batch):
        total += float(x.double().pow(2).sum())
        mean += x.double().sum(0)
        n += len(x)
    if n == 0 or total <= 0:
        raise ArtifactError(f"{store.root}: no usable rows to estimate the activation scale")
    return (store.d_model / (total / n)) ** 0.5, (mean / n).float()


@dataclass(frozen=True)
class TrainResult:
    """A trained SAE (SAELens inference SAE in the model's units) and its training scale."""

    sae: Any
    scale: float
    steps: int
    resumed_from: int
    device: str = "cpu"
    kernels: Optional[dict[str, str]] = None
    feed_share: Optional[float] = None


def _make_trainer(cfg: SAEConfig, sae: Any, data: Iterator[torch.Tensor], device: str = "cpu",
                  autocast: bool = False) -> Any:
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    tcfg = SAETrainerConfig(
        total_training_samples=cfg.training_tokens, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
        lr_end=cfg.lr / 10, lr_scheduler_name=cfg.lr_scheduler, lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps, device=device, autocast=autocast, logger=LoggingConfig(log_to_wandb=False),
        dead_feature_window=max(50, cfg.training_tokens // cfg.batch_size // 4),
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=data)
    fuse_adam(trainer.optimizer)
    return trainer


def fuse_adam(optimizer: Any) -> None:
    """Switch SAELens' Adam to torch's fused kernel (same update, one pass over each parameter; 3x faster
    than the default multi-tensor kernel on this 2-core CPU, and supported on CUDA)."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False


def save_checkpoint(path: Path, trainer: Any, scale: float) -> None:
    tensors = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in trainer.sae.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    for i, st in opt["state"].items():
        for name, val in st.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(val).cpu().contiguous()
    tensors["act_freq_scores"] = trainer.act_freq_scores.cpu()
    tensors["n_forward_passes_since_fired"] = trainer.n_forward_passes_since_fired.cpu()
    meta = {"steps": trainer.n_training_steps, "samples": trainer.n_training_samples,
            "frac_samples": trainer.n_frac_active_samples, "scale": scale}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"saematch": json.dumps(meta)})


def load_checkpoint(path: Path, trainer: Any) -> dict[str, Any]:
    """Restore ``trainer`` from a safetensors checkpoint; return its metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["saematch"])
        tensors = load_file(str(path))
    except Exception as exc:
        raise ArtifactError(f"corrupt SAE checkpoint {path}: {exc}") from None
    trainer.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    opt = trainer.optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    trainer.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    device = trainer.act_freq_scores.device
    trainer.act_freq_scores = tensors["act_freq_scores"].to(device)
    trainer.n_forward_passes_since_fired = tensors["n_forward_passes_since_fired"].to(device)
    trainer.n_training_steps, trainer.n_training_samples = meta["steps"], meta["samples"]
    trainer.n_frac_active_samples = meta["frac_samples"]
    import warnings

    with warnings.catch_warnings():  # replaying the schedule before any optimizer step is intended
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(meta["steps"]):  # schedules are deterministic functions of the step
            trainer.lr_scheduler.step()
            for sched in trainer.coefficient_schedulers.values():
                sched.step()
    return meta


def train_sae(
    store: LayerStore, cfg: SAEConfig, out: Path, n_train: Union[int, np.ndarray], hook: str = "",
    logger: Logger = NullLogger(), log_prefix: str = "", device: str = "cpu",
) -> TrainResult:
    """Train on the rows ``n_train`` of ``store`` (sorted indices: the fit documents of the run's split; a count
    means ``[0, n_train)``) on ``device``; checkpoint into ``out`` as it goes.  No other row is read."""
    from saematch.devices import autocast_on

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CKPT
    torch.manual_seed(cfg.seed)
    sae = make_training_sae(cfg, store.d_model, hook, device)
    n_train = train_rows(n_train)
    scale, mean = activation_stats(store, n_train)
    with torch.no_grad():  # start the decoder bias at the data mean (residuals have a large mean component)
        sae.b_dec.copy_(mean.to(device) * scale)
    in_ram = fits_in_ram(store, len(n_train)) if cfg.feed_in_ram is None else cfg.feed_in_ram
    autocast = autocast_on(cfg.autocast, device)
    log.info("%straining on %s (autocast bf16: %s, layer held in RAM: %s, kernels: %s)", log_prefix, device,
             autocast, in_ram, getattr(sae, "kernels", None))
    feed: list[Prefetcher] = []
    holder: dict[str, Any] = {"scale": scale}

    def data(skip: int) -> Prefetcher:
        for old in feed:
            old.close()
        batches = store.batches(cfg.batch_size, seed=cfg.seed, scale=holder["scale"], skip=skip,
                                in_memory=in_ram, rows=n_train)
        feed[:] = [Prefetcher(batches, device, cfg.prefetch)]
        return feed[0]

    trainer = _make_trainer(cfg, sae, data(0), device, autocast)
    resumed = 0
    if ckpt.is_file():
        meta = load_checkpoint(ckpt, trainer)
        resumed = meta["steps"]
        holder.update(scale=meta["scale"])
        trainer.data_provider = data(resumed)
        log.info("%sresuming SAE training at step %d", log_prefix, resumed)
    total = cfg.training_tokens // cfg.batch_size
    bar = tqdm(total=total, initial=trainer.n_training_steps, desc=f"train {log_prefix}".strip(), unit="step", disable=None)
    t0 = time.perf_counter()
    try:
        while trainer.n_training_steps < total:
            trainer.maybe_reset_sparsity()
            output = trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
            bar.update(1)
            if trainer.n_training_steps % 10 == 0 or trainer.n_training_steps == total:
                _log_step(trainer, output, bar, logger, log_prefix)
            if trainer.n_training_steps % cfg.checkpoint_every == 0 and trainer.n_training_steps < total:
                save_checkpoint(ckpt, trainer, holder["scale"])
    finally:
        bar.close()
        for f in feed:
            f.close()
    synchronize(device)
    elapsed = time.perf_counter() - t0
    share = feed[0].wait_s / elapsed if feed and elapsed > 0 and feed[0].n else None
    trainer.set_final_sae_metadata()
    trained = trainer.sae.to("cpu")
    trained.fold_activation_norm_scaling_factor(holder["scale"])
    return TrainResult(to_inference(trained, out), holder["scale"], trainer.n_training_steps, resumed, device,
                       getattr(sae, "kernels", None), share)


def _log_step(trainer: Any, output: Any, bar: Any, logger: Logger, log_prefix: str) -> None:
    stats = trainer.build_train_step_log_dict(output, trainer.n_training_samples)
    fvu = 1.0 - stats["metrics/explained_variance"]
    dead = float(trainer.dead_neurons.float().mean())
    bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{stats['metrics/l0']:.1f}", dead=f"{dead:.2f}")
    logger.log({f"{log_prefix}train/loss": stats["losses/overall_loss"], f"{log_prefix}train/fvu": fvu,
                f"{log_prefix}train/l0": stats["metrics/l0"], f"{log_prefix}train/dead_frac": dead})


def to_inference(trained: Any, out: Path) -> Any:
    """Save the inference SAE in SAELens format under ``out`` and load it back."""
    from sae_lens import SAE

    tmp = out / "sae.partial"
    trained.save_inference_model(str(tmp))
    for name in ("cfg.json", "sae_weights.safetensors"):
        (tmp / name).replace(out / name)
    tmp.rmdir()
    return SAE.load_from_disk(str(out))
