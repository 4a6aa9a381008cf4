"""Crosscoders: one BatchTopK dictionary shared by two or more models on aligned units.

Public surface (the pipeline calls these from one node per layer pair):

- :class:`CrosscoderConfig`: the stage's config section.
- :func:`train_crosscoder` -> :class:`CrosscoderResult`: train (resumably) and save.
- :func:`load_crosscoder` / :func:`save_crosscoder`: ``crosscoder.safetensors`` + ``cfg.json``.
- :func:`analyse_crosscoder` -> :class:`CrosscoderAnalysis`: per-latent table (relative decoder norm,
  mapped cosine, class, Latent Scaling, firing entropy, co-fire) and summary.
- :func:`latent_activations`, :func:`run_agreement` -> :class:`Agreement`: shared latents against
  the Hungarian pairs of two separate SAEs.
- :func:`penalty_rule` -> ``RuleResult``: the decoder-penalty lambda chosen on planted data by a fixed rule.
- :func:`spectrum_matched`: a source whitened and coloured to another's covariance (the matched floor).
- ``saematch.crosscoder.node``: the graph node (``build``), its report section (``report_section``),
  :func:`best_layer_b` and :func:`latent_scaling_summary`.

Public names are loaded lazily (PEP 562): importing this package does no work, so the config
module can import the stage's config section without cycles.
"""

from saematch.lazy import lazy_exports

_EXPORTS = {'Agreement': 'agreement',
    'ArraySource': 'data',
    'Crosscoder': 'model',
    'CrosscoderAnalysis': 'diagnostics',
    'CrosscoderConfig': 'config',
    'CrosscoderResult': 'train',
    'agreement_table': 'agreement',
    'analyse_crosscoder': 'diagnostics',
    'best_layer_b': 'node',
    'latent_activations': 'agreement',
    'latent_scaling_summary': 'node',
    'load_crosscoder': 'model',
    'n_train_rows': 'train',
    'penalty_rule': 'rule',
    'spectrum_matched': 'floors',
    'run_agreement': 'agreement',
    'save_crosscoder': 'model',
    'train_crosscoder': 'train'}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
