"""The TopK SAE's two sparse-or-dense kernels, and the per-device choice between them.

Only k of d_sae latents are active per row, so two products can run sparse:

- the decoder, ``sum_k acts[:, k] * W_dec[idx[:, k]]``: ``embedding_bag`` over the
  k active rows (sparse) or a scatter into ``[B, d_sae]`` and one matmul (dense);
- the encoder's weight gradient ``x^T G`` with ``G`` the ``[B, d_sae]`` gradient
  of the pre-activations, non-zero at the k selected latents per row: a sparse
  COO product (sparse) or a scatter and one matmul (dense).

Which is faster depends on the device and the shapes: on a 2-core CPU the
sparse kernels win by several times; on a GPU, at large batches, the dense
matmul can win.  ``auto`` times both on random data of the training shapes
(forward and backward, after a warm-up), once per device and shape in a
process, and logs the timings; the choice is recorded in the SAE's manifest.
Both give the same values up to floating-point rounding (tested).
A Triton kernel is not among the candidates: none can be validated without a
GPU here, and the CPU torch wheel ships no Triton.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
import torch.nn.functional as F

from saematch.devices import synchronize

log = logging.getLogger(__name__)
KERNELS = ("sparse", "dense")
_CHOSEN: dict[tuple, dict[str, str]] = {}


def decode(kernel: str, idx_BK: torch.Tensor, w_BK: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``[B, d_in]`` = ``sum_k w[:, k] * W_dec[idx[:, k]]`` (differentiable in ``w`` and ``W_dec``)."""
    if kernel == "sparse":
        return F.embedding_bag(idx_BK, W_dec, per_sample_weights=w_BK.to(W_dec.dtype), mode="sum")
    dense = torch.zeros(idx_BK.shape[0], W_dec.shape[0], dtype=w_BK.dtype, device=w_BK.device)
    return dense.scatter(1, idx_BK, w_BK) @ W_dec


def encoder_grad(kernel: str, x_BD: torch.Tensor, idx_BK: torch.Tensor, g_BK: torch.Tensor,
                 d_sae: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``W_enc [d_in, d_sae]`` and ``b_enc [d_sae]`` from the gradient ``g`` at the selected
    pre-activations (top-k indices are distinct within a row)."""
    B, k = idx_BK.shape
    g = g_BK.to(x_BD.dtype)
    flat = idx_BK.reshape(-1)
    gb = torch.zeros(d_sae, dtype=x_BD.dtype, device=x_BD.device).index_add_(0, flat, g.reshape(-1))
    if kernel == "sparse":
        rows = torch.arange(B, device=x_BD.device).repeat_interleave(k)
        G = torch.sparse_coo_tensor(torch.stack([flat, rows]), g.reshape(-1), (d_sae, B), check_invariants=False)
        return torch.sparse.mm(G, x_BD).t(), gb
    G = torch.zeros(B, d_sae, dtype=x_BD.dtype, device=x_BD.device).scatter_(1, idx_BK, g)
    return x_BD.t() @ G, gb


def _time(fn: Callable[[], None], device: str, reps: int = 3) -> float:
    fn()  # warm-up (allocations, lazy kernel loads)
    synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    synchronize(device)
    return (time.perf_counter() - t) / reps


def choose(setting: str, device: str, batch: int, k: int, d_in: int, d_sae: int) -> dict[str, str]:
    """``{"decode": kernel, "encoder_grad": kernel}``: the setting itself, or for ``auto`` the faster kernels."""
    if setting != "auto":
        return {"decode": setting, "encoder_grad": setting}
    key = (device, batch, k, d_in, d_sae)
    if key in _CHOSEN:
        return _CHOSEN[key]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, d_in, generator=g).to(device)
    idx = torch.stack([torch.randperm(d_sae, generator=g)[:k] for _ in range(min(batch, 64))])
    idx = idx.repeat(-(-batch // len(idx)), 1)[:batch].to(device)
    W = torch.randn(d_sae, d_in, generator=g).to(device).requires_grad_(True)
    w = torch.rand(batch, k, generator=g).to(device).requires_grad_(True)
    times: dict[str, dict[str, float]] = {"decode": {}, "encoder_grad": {}}
    for kern in KERNELS:
        times["decode"][kern] = _time(lambda: decode(kern, idx, w, W).sum().backward(), device)
        times["encoder_grad"][kern] = _time(lambda: encoder_grad(kern, x, idx, w.detach(), d_sae), device)
    choice = {op: min(t, key=t.get) for op, t in times.items()}
    log.info("TopK kernels on %s (batch %d, k %d, %d x %d): %s; timings ms %s", device, batch, k, d_in, d_sae, choice,
             {op: {kn: round(1e3 * s, 2) for kn, s in t.items()} for op, t in times.items()})
    _CHOSEN[key] = choice
    return choice
