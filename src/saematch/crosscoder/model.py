"""A BatchTopK crosscoder over two or more models, each with its own d_model.

Model m reads ``x_m [B, d_m]`` (row i of every model is the same aligned word
unit).  Inputs are scaled by ``scale[m] = sqrt(D / E||x_m - mu_m||^2)`` with
``D = mean_m d_m`` (:attr:`Crosscoder.variance`), so every model carries the
same total variance ``D`` around its mean.  The mean is left out on purpose: a
residual stream's mean is large and model-specific (Gemma-3's is ~90% of its
squared norm, SmolLM2's ~60%); scaling by the raw norm would give the model
with the larger mean less variance, hence smaller decoders, and push every
shared latent's relative decoder norm away from 0.5.  With equal variance, a
latent that explains the same share of each model's variance has equal
decoder norms.  The scales are buffers of the module, so ``encode``/
``reconstruct`` take and return the models' own units, while the weights (and
every decoder norm reported) live in the scaled units.

One shared code for all models::

    pre  = relu(sum_m (x~_m - b_dec[m]) @ W_enc[m] + b_enc)            [B, F]
    f    = BatchTopK_k(pre), ranked by pre * sum_m ||W_dec[m][j]||      [B, F]
    x^_m = f @ W_dec[m] + b_dec[m]                                      [B, d_m]

BatchTopK keeps the ``k * B`` largest entries of the batch (Bussmann et al.
2024), ranked by activation times total decoder norm so a latent cannot buy
activation by shrinking its decoders (the rule Minder et al. 2025 use against
the L1 crosscoder's Complete Shrinkage).  At inference the code is
JumpReLU-like: a latent fires where ``pre * norm`` exceeds ``threshold``, the
running mean of the batch cut-off seen in training, so a unit's code does not
depend on its batch.

Dedicated latents (the "dedicated feature crosscoder" of Jiralerspong & Bricken
2026): ``dedicated[m]`` latents at the end of the dictionary may decode into model
m only; ``dec_mask [F, M]`` fixes their other decoders at zero (initialised zero,
multiplied out in every decode, so they never receive a gradient).  The rest of
the dictionary is the plain shared block, where the decoder-norm penalty alone
decides which model a latent serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from saematch.artifacts import atomic_path, read_json, write_json
from saematch.errors import ArtifactError, SaematchError

WEIGHTS = "crosscoder.safetensors"
CONFIG = "cfg.json"


class Crosscoder(nn.Module):
    """Per-model encoders ``W_enc[m] [d_m, F]`` and decoders ``W_dec[m] [F, d_m]``, one latent code."""

    def __init__(self, d_models: Sequence[int], d_latent: int, k: int, names: Sequence[str] = (),
                 dedicated: Sequence[int] = ()):
        super().__init__()
        if len(d_models) < 2 or min(d_models) < 1 or d_latent < 1 or k < 1:
            raise SaematchError(f"a crosscoder needs >= 2 models with d_model >= 1 and latents, k >= 1 "
                                f"(got d_models={list(d_models)}, latents={d_latent}, k={k})")
        self.d_models = [int(d) for d in d_models]
        self.d_latent, self.k = int(d_latent), int(k)
        self.names = list(names) or [f"m{i}" for i in range(len(d_models))]
        if len(self.names) != len(self.d_models):
            raise SaematchError(f"{len(self.names)} model names for {len(self.d_models)} models")
        F = self.d_latent
        self.W_enc = nn.ParameterList([nn.Parameter(torch.zeros(d, F)) for d in self.d_models])
        self.W_dec = nn.ParameterList([nn.Parameter(torch.zeros(F, d)) for d in self.d_models])
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in self.d_models])
        self.register_buffer("scale", torch.ones(len(self.d_models)))
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet
        self.dedicated = [int(n) for n in dedicated] or [0] * len(self.d_models)
        if len(self.dedicated) != len(self.d_models) or min(self.dedicated) < 0 or sum(self.dedicated) >= F:
            raise SaematchError(f"dedicated latents {self.dedicated} for {len(self.d_models)} models and {F} latents: "
                                f"one count >= 0 per model, leaving at least one shared latent")
        mask = torch.ones(F, len(self.d_models))
        start = F - sum(self.dedicated)
        for m, n in enumerate(self.dedicated):
            mask[start:start + n] = 0.0
            mask[start:start + n, m] = 1.0
            start += n
        self.register_buffer("dec_mask", mask)

    def blocks(self) -> list[str]:
        """Per latent: 'shared', or the name of the one model a dedicated latent decodes into."""
        out = ["shared"] * (self.d_latent - sum(self.dedicated))
        for name, n in zip(self.names, self.dedicated):
            out += [name] * n
        return out

    def enc(self, m: int) -> torch.Tensor:
        """Model m's effective encoder ``[d_m, F]``: a dedicated latent reads its own model only."""
        return self.W_enc[m] * self.dec_mask[:, m] if sum(self.dedicated) else self.W_enc[m]

    def dec(self, m: int) -> torch.Tensor:
        """Model m's effective decoder ``[F, d_m]``: dedicated latents of other models contribute zero."""
        return self.W_dec[m] * self.dec_mask[:, m:m + 1] if sum(self.dedicated) else self.W_dec[m]

    @property
    def n_models(self) -> int:
        return len(self.d_models)

    @property
    def variance(self) -> float:
        """``D``: every model's total variance in scaled units (the mean of the d_models)."""
        return sum(self.d_models) / self.n_models

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Random decoder rows per model, encoders their transposes, biases zero.  Every latent starts with the
        same total decoder norm (the number of models): unit norm per model for a shared latent, all of it in
        its one model for a dedicated one, so BatchTopK's norm-weighted ranking does not start it behind."""
        parity = self.n_models / self.dec_mask.sum(1, keepdim=True)
        for m, d in enumerate(self.d_models):
            w = torch.randn(self.d_latent, d, generator=generator)
            self.W_dec[m].copy_(w / w.norm(dim=1, keepdim=True) * self.dec_mask[:, m:m + 1] * parity)
            self.W_enc[m].copy_(self.W_dec[m].t())

    def dec_norms(self) -> torch.Tensor:
        """``[F, M]`` decoder row norms per model (scaled units)."""
        return torch.stack([self.dec(m).norm(dim=1) for m in range(self.n_models)], dim=1)

    def pre_acts(self, xs: Sequence[torch.Tensor], models: Sequence[int] | None = None) -> torch.Tensor:
        """``relu`` of the encoder sum over ``models`` (default all), on scaled inputs ``xs``."""
        models = range(self.n_models) if models is None else models
        pre = self.b_enc
        for m in models:
            pre = pre + (xs[m] - self.b_dec[m]) @ self.enc(m)
        return torch.relu(pre)

    def batch_topk(self, pre_BF: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the ``k * B`` largest norm-weighted activations of the batch; return ``(f, cut-off)``."""
        k = self.k if k is None else k
        score = pre_BF * self.dec_norms().sum(1).detach()
        n = min(k * pre_BF.shape[0], score.numel())
        top = score.flatten().topk(n, sorted=False)
        mask = torch.zeros_like(score).flatten().scatter_(0, top.indices, 1.0).view_as(score)
        mask = mask * (score > 0)
        kept = top.values[top.values > 0]
        cut = kept.min() if len(kept) else score.new_tensor(0.0)
        return pre_BF * mask, cut.detach()

    def row_topk(self, pre_BF: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Keep each row's ``k`` largest norm-weighted activations (per-unit TopK)."""
        k = min(self.k if k is None else k, pre_BF.shape[1])
        score = pre_BF * self.dec_norms().sum(1)
        idx = score.topk(k, dim=1, sorted=False).indices
        return torch.zeros_like(pre_BF).scatter_(1, idx, pre_BF.gather(1, idx)) * (score > 0)

    def jump(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """Inference code: latents whose norm-weighted activation exceeds ``threshold``."""
        if float(self.threshold) < 0:
            return self.batch_topk(pre_BF)[0]
        return pre_BF * (pre_BF * self.dec_norms().sum(1) > self.threshold)

    def scale_in(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        return [x.to(self.b_enc.dtype) * self.scale[m] for m, x in enumerate(xs)]

    def decode_scaled(self, f_BF: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions in scaled units, one ``[B, d_m]`` per model."""
        return [f_BF @ self.dec(m) + self.b_dec[m] for m in range(self.n_models)]

    @torch.no_grad()
    def encode(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, F]`` latent code of inputs in the models' own units."""
        return self.jump(self.pre_acts(self.scale_in(xs)))

    @torch.no_grad()
    def reconstruct(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Reconstructions in the models' own units."""
        f = self.encode(xs)
        return [r / self.scale[m] for m, r in enumerate(self.decode_scaled(f))]

    def check_inputs(self, xs: Sequence[torch.Tensor]) -> None:
        if len(xs) != self.n_models:
            raise SaematchError(f"crosscoder reads {self.n_models} models, got {len(xs)} inputs")
        for m, x in enumerate(xs):
            if x.ndim != 2 or x.shape[1] != self.d_models[m] or x.shape[0] != xs[0].shape[0]:
                raise SaematchError(f"input {m} ({self.names[m]}) has shape {tuple(x.shape)}, expected "
                                    f"[{xs[0].shape[0]}, {self.d_models[m]}]")

    def config_dict(self) -> dict:
        return {"architecture": "batchtopk-crosscoder", "d_models": self.d_models, "d_latent": self.d_latent,
                "k": self.k, "names": self.names, "dedicated": self.dedicated}


def save_crosscoder(cc: Crosscoder, out: Path) -> list[Path]:
    """Write ``crosscoder.safetensors`` and ``cfg.json`` atomically under ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in cc.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    write_json(out / CONFIG, cc.config_dict())
    return [out / WEIGHTS, out / CONFIG]


def load_crosscoder(root: Path) -> Crosscoder:
    """The crosscoder saved under ``root`` by :func:`save_crosscoder`."""
    cfg = read_json(root / CONFIG)
    if cfg.get("architecture") != "batchtopk-crosscoder":
        raise ArtifactError(f"{root / CONFIG} does not describe a batchtopk-crosscoder")
    cc = Crosscoder(cfg["d_models"], cfg["d_latent"], cfg["k"], cfg["names"], cfg.get("dedicated", ()))
    try:
        tensors = load_file(str(root / WEIGHTS))
        cc.load_state_dict(tensors)
    except Exception as exc:
        raise ArtifactError(f"torn or corrupt crosscoder weights {root / WEIGHTS}: {exc}") from None
    return cc
