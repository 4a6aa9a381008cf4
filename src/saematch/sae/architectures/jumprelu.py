"""JumpReLU SAE (Rajamanoharan et al. 2024): no bound on active latents per unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import SAEConfig, _check, opt
from saematch.registry import SAE_ARCHITECTURES


@SAE_ARCHITECTURES.register("jumprelu")
@dataclass(frozen=True)
class JumpReLUSAEConfig(SAEConfig):
    """JumpReLU with SAELens' JumpReLUTrainingSAE and its L0 penalty."""

    l0_coefficient: float = opt(1.0, "weight of the L0 sparsity penalty")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.l0_coefficient >= 0, "sae.l0_coefficient must be >= 0")

    def training_sae(self, common: dict[str, Any]) -> Any:
        import sae_lens as sl

        return sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(l0_coefficient=self.l0_coefficient, **common))
