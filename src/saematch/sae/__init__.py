"""Stage 3: SAEs per (model, layer): trained with SAELens or loaded pretrained.

Nothing heavy is imported here: ``saematch.sae.train``, ``.evaluate``,
``.load`` and ``.stage`` import torch and SAELens when used.
"""

from typing import Any

_LAZY = {"SAEEval": "evaluate", "check_fits": "load", "load_pretrained": "load", "load_sae_dir": "load",
         "TrainResult": "train", "make_training_sae": "train", "train_sae": "train"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"saematch.sae.{_LAZY[name]}"), name)
    raise AttributeError(name)
