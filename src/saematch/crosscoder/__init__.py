"""Crosscoders: one BatchTopK dictionary shared by two or more models on aligned units.

Public surface (the pipeline calls these from one node per layer pair):

- :class:`CrosscoderConfig`: the stage's config section.
- :func:`train_crosscoder` -> :class:`CrosscoderResult`: train (resumably) and save.
- :func:`load_crosscoder` / :func:`save_crosscoder`: ``crosscoder.safetensors`` + ``cfg.json``.
- :func:`analyse_crosscoder` -> :class:`CrosscoderAnalysis`: per-latent table (relative decoder norm,
  mapped cosine, class, Latent Scaling, firing entropy, co-fire) and summary.
- :func:`latent_activations`, :func:`run_agreement` -> :class:`Agreement`: shared latents against
  the Hungarian pairs of two separate SAEs.

Public names are loaded lazily (PEP 562): importing this package does no work, so the config
module can import the stage's config section without cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {'Agreement': 'agreement',
    'ArraySource': 'data',
    'Crosscoder': 'model',
    'CrosscoderAnalysis': 'diagnostics',
    'CrosscoderConfig': 'config',
    'CrosscoderResult': 'train',
    'agreement_table': 'agreement',
    'analyse_crosscoder': 'diagnostics',
    'latent_activations': 'agreement',
    'load_crosscoder': 'model',
    'n_train_rows': 'train',
    'run_agreement': 'agreement',
    'save_crosscoder': 'model',
    'train_crosscoder': 'train'}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
