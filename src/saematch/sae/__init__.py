"""Stage 3: SAEs per (model, layer): trained with SAELens or loaded pretrained.

Nothing heavy is imported here: ``saematch.sae.train``, ``.evaluate``,
``.load`` and ``.stage`` import torch and SAELens when used.
"""

from saematch.lazy import lazy_exports

_LAZY = {"SAEEval": "evaluate", "check_fits": "load", "load_pretrained": "load", "load_sae_dir": "load",
         "TrainResult": "train", "make_training_sae": "train", "train_sae": "train"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
