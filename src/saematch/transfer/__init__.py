"""Transfer across models: maps between residual streams, and SAE, steering and probe transfer.

Public surface (the pipeline's transfer node calls :func:`run_transfer`):

* :class:`TransferConfig`: the ``transfer:`` config section.
* :func:`run_transfer`: one model pair at one layer pair -> tables in ``out``.
* maps: :class:`RidgeCVMap`, :class:`WhitenedProcrustesMap`, :class:`MLPMap`,
  :func:`save_map`, :func:`load_map`, :func:`r2_score`.
* pieces: :func:`sae_transfer`, :func:`steering_transfer`, :func:`probe_transfer`,
  :func:`unit_labels`, :func:`heldout_prompts`, :func:`probe_matrix`.
"""

from saematch.transfer.config import TransferConfig
from saematch.transfer.labels import unit_labels
from saematch.transfer.maps import RidgeCVMap, WhitenedProcrustesMap, r2_score
from saematch.transfer.mlp import MLPMap
from saematch.transfer.persist import load_map, save_map
from saematch.transfer.probes import probe_matrix, probe_transfer
from saematch.transfer.sae_transfer import SAETransferResult, sae_transfer
from saematch.transfer.stage import TransferResult, run_transfer
from saematch.transfer.steering import heldout_prompts, steering_transfer

__all__ = [
    "MLPMap", "RidgeCVMap", "SAETransferResult", "TransferConfig", "TransferResult", "WhitenedProcrustesMap",
    "heldout_prompts", "load_map", "probe_matrix", "probe_transfer", "r2_score", "run_transfer", "sae_transfer",
    "save_map", "steering_transfer", "unit_labels",
]
