"""Standard ReLU SAE with an L1 penalty: no bound on active latents per unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import SAEConfig, _check, opt
from saematch.registry import SAE_ARCHITECTURES


@SAE_ARCHITECTURES.register("standard")
@dataclass(frozen=True)
class StandardSAEConfig(SAEConfig):
    """ReLU + L1 with SAELens' StandardTrainingSAE."""

    l1_coefficient: float = opt(5.0, "weight of the L1 sparsity penalty")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.l1_coefficient >= 0, "sae.l1_coefficient must be >= 0")

    def training_sae(self, common: dict[str, Any]) -> Any:
        import sae_lens as sl

        return sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(l1_coefficient=self.l1_coefficient, **common))
