"""TopK SAE: exactly k active latents per unit (Gao et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from saematch.config import SAEConfig, _check, opt
from saematch.registry import SAE_ARCHITECTURES


@SAE_ARCHITECTURES.register("topk")
@dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """TopK: trained with saematch's sparse subclass of SAELens' TopKTrainingSAE (same loss and gradients)."""

    k: int = opt(32, "active latents per unit")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.k >= 1, "sae.k must be >= 1")

    def max_active(self, d_sae: int) -> Optional[int]:
        return min(self.k, d_sae)

    def training_sae(self, common: dict[str, Any]) -> Any:
        import sae_lens as sl

        from saematch.sae.sparse_topk import sparse_topk_class

        return sparse_topk_class()(sl.TopKTrainingSAEConfig(k=self.k, decoder_init_norm=1.0, **common))
