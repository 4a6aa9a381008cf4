"""Train a BatchTopK crosscoder on the aligned units of two or more models.

Why our own loop and not SAELens' or sparsify's machinery: SAELens'
``SAETrainer`` and sparsify's ``Trainer`` both train a module with one input
and one output of a single ``d_in`` (one activation tensor per batch, one
``W_dec [d_sae, d_in]``, metrics such as explained variance over that one
tensor, dead-latent bookkeeping tied to their SAE classes).  A crosscoder here
reads and writes a list of tensors of *different* widths (one per model), so
neither trainer's step, loss or metrics apply without rewriting them; and
SAELens' trainer state is saved with ``torch.save`` (a pickle).  The loop below
keeps what those trainers do (Adam, linear lr decay at the end, BatchTopK with
a running inference threshold, the aux-k dead-latent loss of Gao et al. 2024,
inputs scaled to one total variance ``D`` per model) split into step, log and
checkpoint.

Loss, per batch::

    sum_m  mean_rows ||x~_m - x^_m||^2 / D            (each model weighted equally)
  + aux_coefficient * sum_m mean_rows ||e_m - a_m||^2 / D
  + decoder_penalty * mean_rows sum_i f_i * sum_m ||d_m,i|| / sqrt(D)

where ``x~_m`` is model m's scaled input (total variance ``D`` around its
mean for every model, so each term is a fraction of unexplained variance),
``e_m`` the detached residual and ``a_m`` its reconstruction by the top
``min(d)/2`` dead latents.  The last term is Lindsey et al.'s (2024)
decoder-norm-weighted sparsity penalty (with ``decoder_penalty_tanh = c > 0``:
``tanh(c * ...)``, the saturating form).  BatchTopK stays the sparsity
selector (Minder et al. 2025: an L1-only crosscoder shrinks and decouples
latents); a small penalty only adds a constant pull on every decoder norm, so
the decoder of a model that does not need a latent reaches 0 instead of
keeping whatever weak correlation MSE alone leaves in it.  Latent Scaling
(``diagnostics``) checks the exclusive latents this produces.

Checkpoints (``checkpoint.safetensors``) hold the weights, buffers, Adam
moments and the dead-latent counters; the data order is a function of the
seed and the step, so a run killed at any point (even ``kill -9``) and resumed
ends with exactly the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saematch.artifacts import atomic_path
from saematch.crosscoder.config import CrosscoderConfig
from saematch.crosscoder.data import Source, SourceLike, aligned_batches, as_sources, check_rows, input_stats
from saematch.crosscoder.model import Crosscoder, save_crosscoder
from saematch.sae.feed import Prefetcher

log = logging.getLogger(__name__)
CKPT = "checkpoint.safetensors"


@dataclass(frozen=True)
class CrosscoderResult:
    """A trained crosscoder and how it was trained.

    n_train: how many units trained it (``train_rows``: which; only those were ever in a batch).
    penalty: the decoder-penalty lambda it trained with (the rule's choice where the config says 'rule').
    metrics: the last logged training metrics (loss, fvu/<model>, l0, dead_frac).
    files: the saved weights and config.
    """

    crosscoder: Crosscoder
    steps: int
    resumed_from: int
    n_train: int
    train_rows: np.ndarray
    penalty: float
    metrics: dict[str, float]
    files: tuple[Path, ...]


@dataclass
class _State:
    """What a checkpoint holds besides the config: model, optimizer, dead counters, step."""

    model: Crosscoder
    opt: torch.optim.Adam
    since_fired: torch.Tensor  # [F] units since each latent last fired
    penalty: float = 0.0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def n_train_rows(n_rows: int, cfg: CrosscoderConfig) -> int:
    """Outside a run: rows ``[0, n_train)`` train the crosscoder; the rest are held out for the analysis."""
    return int(n_rows * (1 - cfg.eval_fraction))


def default_rows(n_rows: int, cfg: CrosscoderConfig) -> tuple[np.ndarray, np.ndarray]:
    """Outside a run (no document split given): train on the first rows, hold out the last ``eval_fraction``."""
    n = n_train_rows(n_rows, cfg)
    return np.arange(n, dtype=np.int64), np.arange(n, n_rows, dtype=np.int64)


def _fingerprint(cfg: CrosscoderConfig, d_models: Sequence[int], rows: np.ndarray, extra: dict) -> str:
    """What a checkpoint must agree on to be resumed: the hashed config fields (not threads, intervals), the
    training units and the resolved penalty and dictionary layout."""
    from saematch.configio import hash_view

    h = hashlib.sha256(np.ascontiguousarray(rows, np.int64).tobytes()).hexdigest()
    blob = json.dumps({"cfg": hash_view(cfg), "d_models": list(d_models), "rows": h, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _lr(step: int, cfg: CrosscoderConfig) -> float:
    """Constant, then linear decay to 0 over the last ``lr_decay_fraction`` of the steps."""
    decay = int(cfg.steps * cfg.lr_decay_fraction)
    start = cfg.steps - decay
    return cfg.lr if step < start or decay == 0 else cfg.lr * (cfg.steps - step) / decay


def _aux_loss(model: Crosscoder, pre_BF: torch.Tensor, errs: list[torch.Tensor], dead: torch.Tensor) -> torch.Tensor:
    """Dead latents' top activations reconstruct the detached residual of every model (aux-k)."""
    idx = dead.nonzero().squeeze(-1)
    k_aux = min(min(model.d_models) // 2 or 1, len(idx))
    top = pre_BF[:, idx].topk(k_aux, dim=1, sorted=False)
    loss = pre_BF.new_tensor(0.0)
    for m, e in enumerate(errs):
        rec = pre_BF.new_zeros(len(pre_BF), len(idx)).scatter(1, top.indices, top.values) @ model.dec(m)[idx]
        loss = loss + (e.detach() - rec).pow(2).sum(1).mean() / model.variance
    return loss * min(len(idx) / max(k_aux, 1), 1.0)


def decoder_penalty(model: Crosscoder, f_BF: torch.Tensor, tanh: float = 0.0) -> torch.Tensor:
    """Mean over units of ``sum_i f_i * sum_m ||d_m,i|| / sqrt(D)`` (with ``tanh > 0``: of
    ``sum_i tanh(tanh * f_i * sum_m ||d_m,i|| / sqrt(D))``).  The sum over models of decoder *norms* (an L1
    across models, not the norm of the concatenated decoders) is what lets one model's decoder reach 0."""
    contrib = f_BF * model.dec_norms().sum(1) / model.variance ** 0.5
    if tanh > 0:
        contrib = torch.tanh(tanh * contrib)
    return contrib.sum(1).mean()


def _step(st: _State, xs: list[torch.Tensor], cfg: CrosscoderConfig) -> dict[str, float]:
    """One optimiser step on a scaled, aligned batch; returns its metrics."""
    model = st.model
    for g in st.opt.param_groups:
        g["lr"] = _lr(st.step, cfg)
    pre = model.pre_acts(xs)
    f, cut = model.batch_topk(pre)
    errs = [x - r for x, r in zip(xs, model.decode_scaled(f))]
    mse = sum(e.pow(2).sum(1).mean() for e in errs) / model.variance
    with torch.no_grad():
        st.since_fired += len(f)
        st.since_fired[(f > 0).any(0)] = 0
        dead = st.since_fired >= cfg.dead_units
    aux = _aux_loss(model, pre, errs, dead) if cfg.aux_coefficient > 0 and bool(dead.any()) else pre.new_tensor(0.0)
    pen = decoder_penalty(model, f, cfg.decoder_penalty_tanh) if st.penalty > 0 else pre.new_tensor(0.0)
    loss = mse + cfg.aux_coefficient * aux + st.penalty * pen
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    st.step += 1
    with torch.no_grad():
        th = model.threshold
        th.copy_(cut if float(th) < 0 else cfg.threshold_momentum * th + (1 - cfg.threshold_momentum) * cut)
        out = {"loss": float(loss), "mse": float(mse), "aux": float(aux), "penalty": float(pen), "l0": float((f > 0).sum(1).float().mean()),
               "dead_frac": float(dead.float().mean())}
        for m, (x, e) in enumerate(zip(xs, errs)):
            out[f"fvu/{model.names[m]}"] = float(e.pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))
    return out


def _log(st: _State, stats: dict[str, float], bar: Any, logger: Any, prefix: str) -> None:
    st.metrics = stats
    bar.set_postfix(loss=f"{stats['loss']:.3f}", l0=f"{stats['l0']:.1f}", dead=f"{stats['dead_frac']:.2f}")
    if logger is not None:
        logger.log({f"{prefix}crosscoder/{k}": v for k, v in stats.items()})


def save_checkpoint(path: Path, st: _State, fingerprint: str) -> None:
    """Weights, buffers, Adam moments and dead counters as one safetensors file, atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in st.model.state_dict().items()}
    for i, s in st.opt.state_dict()["state"].items():
        for name, val in s.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(val).cpu().contiguous()
    tensors["since_fired"] = st.since_fired.cpu()
    meta = {"step": st.step, "fingerprint": fingerprint, "metrics": st.metrics}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"saematch": json.dumps(meta)})


def load_checkpoint(path: Path, st: _State, fingerprint: str) -> bool:
    """Restore ``st`` from ``path``; False (and nothing changed) if it is unreadable or from another config."""
    try:
        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["saematch"])
        tensors = load_file(str(path))
    except Exception as exc:  # a torn checkpoint is ignored, never trusted
        log.warning("ignoring unreadable crosscoder checkpoint %s: %s", path, exc)
        return False
    if meta.get("fingerprint") != fingerprint:
        log.warning("ignoring crosscoder checkpoint %s written by another config", path)
        return False
    st.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    st.opt.load_state_dict({"state": state, "param_groups": st.opt.state_dict()["param_groups"]})
    st.since_fired = tensors["since_fired"].to(st.since_fired.device)
    st.step, st.metrics = int(meta["step"]), dict(meta.get("metrics", {}))
    return True


def dedicated_counts(d_latent: int, n_models: int, share: float) -> list[int]:
    """Latents dedicated to each model: ``share`` of the dictionary, split equally (0 share: a plain one)."""
    return [int(round(share * d_latent / n_models))] * n_models if share > 0 else []


def _init(sources: Sequence[Source], cfg: CrosscoderConfig, names: Sequence[str], rows: np.ndarray,
          device: str = "cpu", dedicated_share: float = 0.0, penalty: float = 0.0) -> _State:
    d_models = [s.d_model for s in sources]
    F = cfg.expansion * max(d_models)
    model = Crosscoder(d_models, F, cfg.k, names, dedicated_counts(F, len(d_models), dedicated_share))
    model.init_weights(torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        for m, s in enumerate(sources):
            var, mean = input_stats(s, rows)
            scale = (model.variance / var) ** 0.5
            model.scale[m] = scale
            model.b_dec[m].copy_(mean * scale)  # residual streams have a large mean component
    model.to(device)  # initialised on the CPU (the same weights on every device), then moved
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return _State(model, opt, torch.zeros(model.d_latent, dtype=torch.long, device=device), penalty)


def train_crosscoder(
    inputs: Sequence[SourceLike], cfg: CrosscoderConfig, out: Path, names: Sequence[str] = (),
    logger: Optional[Any] = None, log_prefix: str = "", device: str = "cpu",
    train_rows: Optional[np.ndarray] = None, dedicated_share: float = 0.0,
) -> CrosscoderResult:
    """Train on the units ``train_rows`` of aligned ``inputs`` (stores, store folders or ``[N, d_m]`` arrays).

    ``train_rows`` (indices or a boolean mask; in a run, the train documents of the run's split): no other unit
    is ever read into a batch or into the input scales; default the first rows (:func:`default_rows`).
    ``dedicated_share > 0`` dedicates that share of the latents to one model each (:class:`Crosscoder`).
    Checkpoints into ``out`` as it goes and resumes from a checkpoint there;
    writes ``crosscoder.safetensors`` + ``cfg.json`` and removes the checkpoint
    at the end.  ``logger`` is anything with ``log(dict)`` (saematch's loggers).  Trains on ``device``
    (batches prepared by a background thread, as for the SAEs); the result comes back on the CPU.
    """
    sources = as_sources(inputs)
    out.mkdir(parents=True, exist_ok=True)
    n_rows = sources[0].n_rows
    rows = default_rows(n_rows, cfg)[0] if train_rows is None else check_rows(train_rows, n_rows, "train_rows")
    penalty = cfg.penalty()
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = None
    try:
        st = _init(sources, cfg, names, rows, device, dedicated_share, penalty)
        fp = _fingerprint(cfg, st.model.d_models, rows, {"penalty": penalty, "dedicated": st.model.dedicated})
        resumed = st.step if (out / CKPT).is_file() and load_checkpoint(out / CKPT, st, fp) else 0
        if resumed:
            log.info("%sresuming crosscoder training at step %d", log_prefix, resumed)
        batches = aligned_batches(sources, cfg.batch_size, rows, cfg.seed, st.model.scale.tolist(), skip=st.step)
        data = Prefetcher(batches, device, 4)
        bar = tqdm(total=cfg.steps, initial=st.step, desc=f"crosscoder {log_prefix}".strip(), unit="step", disable=None)
        while st.step < cfg.steps:
            stats = _step(st, next(data), cfg)
            bar.update(1)
            if st.step % cfg.log_every == 0 or st.step == cfg.steps:
                _log(st, stats, bar, logger, log_prefix)
            if st.step % cfg.checkpoint_every == 0 and st.step < cfg.steps:
                save_checkpoint(out / CKPT, st, fp)
        bar.close()
    finally:
        if data is not None:
            data.close()
        torch.set_num_threads(old_threads)
    st.model.to("cpu")
    files = save_crosscoder(st.model, out)
    (out / CKPT).unlink(missing_ok=True)
    st.model.eval()
    return CrosscoderResult(st.model, st.step, resumed, len(rows), rows, penalty, st.metrics, tuple(files))
