"""SAE evaluation on held-out units: FVU, L0, dead/dense fractions, LM-loss splice."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch

from saematch.activations import LayerStore
from saematch.adapter import ModelAdapter


@dataclass(frozen=True)
class SAEEval:
    """Quality of one SAE on held-out units (the contents of ``eval.json``).

    fvu: fraction of variance unexplained, sum||x - x_hat||^2 / sum||x - mean(x)||^2.
    l0: mean number of active latents per unit.
    dead_frac: fraction of latents that never fire on the eval units.
    dense_frac: fraction of latents firing on more than 10% of the eval units (a fixed yardstick;
    the features stage flags dense features at its own ``features.dense_threshold``).
    n_units: eval units used.  d_in, d_sae: SAE shape.
    loss_clean / loss_spliced / loss_zero: next-token cross-entropy of the model
    as is, with the SAE reconstruction spliced in at the layer, and with the
    residual zeroed there; loss_recovered = (zero - spliced) / (zero - clean).
    None when the splice eval is off.
    """

    fvu: float
    l0: float
    dead_frac: float
    dense_frac: float
    n_units: int
    d_in: int
    d_sae: int
    scale: Optional[float] = None
    loss_clean: Optional[float] = None
    loss_spliced: Optional[float] = None
    loss_zero: Optional[float] = None
    loss_recovered: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def reconstruction_stats(
    sae: Any, store: LayerStore, start: int, stop: int, batch: int = 2048, dense_threshold: float = 0.1,
    rows: Any = None,
) -> SAEEval:
    """Stream rows ``[start, stop)`` (or the sorted indices ``rows``) through the SAE and accumulate quality
    statistics."""
    d_sae = sae.cfg.d_sae
    device = sae.W_dec.device
    fires = torch.zeros(d_sae, dtype=torch.long, device=device)
    sse = 0.0
    sum_x = torch.zeros(store.d_model, dtype=torch.float64)
    sum_sq = 0.0
    l0 = 0.0
    n = 0
    it = store.iter_rows(start, stop, batch) if rows is None else store.iter_take(rows, batch)
    for x in it:
        xd = x.to(device, non_blocking=True)
        f = sae.encode(xd)
        x_hat = sae.decode(f)
        active = f != 0
        fires += active.sum(0)
        l0 += float(active.sum())
        sse += float((xd - x_hat).double().pow(2).sum())
        sum_x += x.double().sum(0)
        sum_sq += float(x.double().pow(2).sum())
        n += len(x)
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n
    return SAEEval(
        fvu=sse / total_var, l0=l0 / n, dead_frac=float((fires == 0).float().mean()),
        dense_frac=float((fires > dense_threshold * n).float().mean()), n_units=n, d_in=store.d_model, d_sae=d_sae,
    )


def splice(sae: Any, skip: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Residual -> SAE reconstruction at every position from ``skip`` on (BOS kept)."""

    def fn(x_BTD: torch.Tensor) -> torch.Tensor:
        out = x_BTD.clone()
        flat = x_BTD[:, skip:].float().reshape(-1, x_BTD.shape[-1])
        out[:, skip:] = sae.decode(sae.encode(flat)).reshape(x_BTD[:, skip:].shape).to(x_BTD.dtype)
        return out

    return fn


def zero_from(skip: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x_BTD: torch.Tensor) -> torch.Tensor:
        out = x_BTD.clone()
        out[:, skip:] = 0
        return out

    return fn


@torch.no_grad()
def lm_loss(adapter: ModelAdapter, sae: Any, layer: int, ids_BT: torch.Tensor, skip: int,
            clean: Optional[float] = None) -> dict[str, float]:
    """Mean next-token loss clean, with the SAE spliced in, and zero-ablated at ``layer``.

    Positions before ``skip`` (special prefix tokens such as BOS) are left alone,
    and losses are averaged over the predictions made from spliced positions.
    ``clean`` reuses a clean loss already measured on the same ``ids_BT``.
    """
    if clean is None:
        clean = adapter.token_losses(ids_BT)[:, skip:].mean().item()
    spliced = adapter.token_losses(ids_BT, layer, splice(sae, skip))[:, skip:].mean().item()
    zero = adapter.token_losses(ids_BT, layer, zero_from(skip))[:, skip:].mean().item()
    denom = zero - clean
    return {"loss_clean": clean, "loss_spliced": spliced, "loss_zero": zero,
            "loss_recovered": (zero - spliced) / denom if abs(denom) > 1e-9 else float("nan")}


class LossProbe:
    """The LM-loss splice for one model: windows ``ids_BT[B, T]``, the prefix length ``skip``,
    and the model, loaded on first use.  The clean loss is measured once and shared by its layers."""

    def __init__(self, get_adapter: Callable[[], ModelAdapter], ids_BT: torch.Tensor, skip: int):
        self.get_adapter, self.ids_BT, self.skip = get_adapter, ids_BT, skip
        self._clean: Optional[float] = None

    def __call__(self, sae: Any, layer: int) -> dict[str, float]:
        adapter = self.get_adapter()
        if self._clean is None:
            self._clean = float(adapter.token_losses(self.ids_BT)[:, self.skip:].mean().item())
        return lm_loss(adapter, sae, layer, self.ids_BT, self.skip, clean=self._clean)
