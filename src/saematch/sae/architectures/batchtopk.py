"""BatchTopK SAE: k active latents per unit on average over a batch (Bussmann et al. 2024).

At inference SAELens turns it into a JumpReLU with a learned threshold, so a
unit has no fixed bound on its active latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import SAEConfig, _check, opt
from saematch.registry import SAE_ARCHITECTURES


@SAE_ARCHITECTURES.register("batchtopk")
@dataclass(frozen=True)
class BatchTopKSAEConfig(SAEConfig):
    """BatchTopK with SAELens' BatchTopKTrainingSAE."""

    k: int = opt(32, "mean active latents per unit over a batch")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.k >= 1, "sae.k must be >= 1")

    def training_sae(self, common: dict[str, Any]) -> Any:
        import sae_lens as sl

        return sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(k=self.k, decoder_init_norm=1.0, **common))
