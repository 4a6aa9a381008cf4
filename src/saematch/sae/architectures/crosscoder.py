"""``crosscoder``: registered so the name resolves to the crosscoder stage, not to a single-model SAE.

A crosscoder (Lindsey et al. 2024) is one dictionary over two models at once,
with an encoder and a decoder per model, each of its own d_model; its training
machinery, config and nodes live in :mod:`saematch.crosscoder` (the
``crosscoder:`` section of a run config, one node per A layer and its
best-matching B layer).  A train node reads one (model, layer), so the name
cannot build an SAE there: choosing it as ``sae.architecture`` is one clear
error that points to that section.  Its inference code is BatchTopK's
JumpReLU-like threshold, so it has no per-unit bound on active latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from saematch.config import SAEConfig
from saematch.errors import ConfigError
from saematch.registry import SAE_ARCHITECTURES

HINT = ("sae.architecture 'crosscoder' is not a single-model SAE: a crosscoder reads two models' layers at once. "
        "Keep sae.architecture a single-model architecture (topk, batchtopk, jumprelu, standard) and turn on the "
        "crosscoder section instead (crosscoder: {enabled: true, k: ..., expansion: ...}; run `saematch crosscoder "
        "CONFIG`)")


@SAE_ARCHITECTURES.register("crosscoder")
@dataclass(frozen=True)
class CrosscoderSAEConfig(SAEConfig):
    """Points ``sae.architecture: crosscoder`` to the ``crosscoder`` section (:class:`CrosscoderConfig`)."""

    def __post_init__(self) -> None:
        raise ConfigError(HINT)

    def max_active(self, d_sae: int) -> Optional[int]:
        return None  # BatchTopK at training, a JumpReLU-like threshold at inference: no per-unit bound

    def training_sae(self, common: dict[str, Any]) -> Any:
        raise ConfigError(HINT)
