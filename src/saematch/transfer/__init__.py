"""Transfer across models: maps between residual streams, and SAE, steering and probe transfer.

Public surface (the pipeline's transfer node calls :func:`run_transfer`):

* :class:`TransferConfig`: the ``transfer:`` config section.
* :func:`run_transfer`: one model pair at one layer pair -> tables in ``out``.
* maps: :class:`RidgeCVMap`, :class:`WhitenedProcrustesMap`, :class:`MLPMap`,
  :func:`save_map`, :func:`load_map`, :func:`r2_score`.
* pieces: :func:`sae_transfer`, :func:`steering_transfer`, :func:`probe_transfer`,
  :func:`unit_labels`, :func:`heldout_prompts`, :func:`probe_matrix`.
* pipeline: :mod:`saematch.transfer.node` (``build``, ``report_section``, :func:`best_b_layer`,
  :func:`heldout_runs`); :func:`load_tables` reads every built node's tables as DataFrames.

Public names are loaded lazily (PEP 562): importing this package does no work, so the config
module can import the stage's config section without cycles.
"""

from saematch.lazy import lazy_exports

_EXPORTS = {'MLPMap': 'mlp',
    'RidgeCVMap': 'maps',
    'SAETransferResult': 'sae_on_mapped',
    'TransferConfig': 'config',
    'TransferResult': 'stage',
    'WhitenedProcrustesMap': 'maps',
    'best_b_layer': 'node',
    'heldout_prompts': 'steering',
    'heldout_runs': 'node',
    'load_tables': 'report',
    'load_map': 'persist',
    'probe_matrix': 'probes',
    'probe_transfer': 'probes',
    'r2_score': 'maps',
    'run_transfer': 'stage',
    'subsample': 'stage',
    'sae_transfer': 'sae_on_mapped',
    'save_map': 'persist',
    'steering_transfer': 'steering',
    'unit_labels': 'labels'}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
