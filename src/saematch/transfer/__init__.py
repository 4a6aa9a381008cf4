"""Transfer across models: maps between residual streams, and SAE, steering and probe transfer.

Public surface (the pipeline's transfer node calls :func:`run_transfer`):

* :class:`TransferConfig`: the ``transfer:`` config section.
* :func:`run_transfer`: one model pair at one layer pair -> tables in ``out``.
* maps: :class:`RidgeCVMap`, :class:`WhitenedProcrustesMap`, :class:`MLPMap`,
  :func:`save_map`, :func:`load_map`, :func:`r2_score`.
* pieces: :func:`sae_transfer`, :func:`steering_transfer`, :func:`probe_transfer`,
  :func:`unit_labels`, :func:`heldout_prompts`, :func:`probe_matrix`.

Public names are loaded lazily (PEP 562): importing this package does no work, so the config
module can import the stage's config section without cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {'MLPMap': 'mlp',
    'RidgeCVMap': 'maps',
    'SAETransferResult': 'sae_transfer',
    'TransferConfig': 'config',
    'TransferResult': 'stage',
    'WhitenedProcrustesMap': 'maps',
    'heldout_prompts': 'steering',
    'load_map': 'persist',
    'probe_matrix': 'probes',
    'probe_transfer': 'probes',
    'r2_score': 'maps',
    'run_transfer': 'stage',
    'sae_transfer': 'sae_transfer',
    'save_map': 'persist',
    'steering_transfer': 'steering',
    'unit_labels': 'labels'}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
