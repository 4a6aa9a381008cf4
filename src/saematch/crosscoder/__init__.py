"""Crosscoders: one BatchTopK dictionary shared by two or more models on aligned units.

Public surface (the pipeline calls these from one node per layer pair):

- :class:`CrosscoderConfig`: the stage's config section.
- :func:`train_crosscoder` -> :class:`CrosscoderResult`: train (resumably) and save.
- :func:`load_crosscoder` / :func:`save_crosscoder`: ``crosscoder.safetensors`` + ``cfg.json``.
- :func:`analyse_crosscoder` -> :class:`CrosscoderAnalysis`: per-latent table (relative decoder norm,
  mapped cosine, class, Latent Scaling, firing entropy, co-fire) and summary.
- :func:`latent_activations`, :func:`run_agreement` -> :class:`Agreement`: shared latents against
  the Hungarian pairs of two separate SAEs.
"""

from saematch.crosscoder.agreement import Agreement, agreement_table, latent_activations, run_agreement
from saematch.crosscoder.config import CrosscoderConfig
from saematch.crosscoder.data import ArraySource
from saematch.crosscoder.diagnostics import CrosscoderAnalysis, analyse_crosscoder
from saematch.crosscoder.model import Crosscoder, load_crosscoder, save_crosscoder
from saematch.crosscoder.train import CrosscoderResult, n_train_rows, train_crosscoder

__all__ = [
    "Agreement", "ArraySource", "Crosscoder", "CrosscoderAnalysis", "CrosscoderConfig", "CrosscoderResult",
    "agreement_table", "analyse_crosscoder", "latent_activations", "load_crosscoder", "n_train_rows",
    "run_agreement", "save_crosscoder", "train_crosscoder",
]
