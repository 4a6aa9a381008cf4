"""Interactions between input words, and how much two models share them (Lou et al.; Chen, Lou et al. 2024).

For prompts where two models predict the same next word, v(S) is the target's log-odds with the
words outside S masked; AND and OR interactions decompose v over all 2^n subsets of n words, and
the salient ones are compared across models, against a random-init floor, a different-prompt
floor and a same-model-two-baselines ceiling.  The pipeline's node is :mod:`saematch.interactions.node`.

Public names are loaded lazily (PEP 562), so the config module can import the config section cheaply.
"""

from saematch.lazy import lazy_exports

_EXPORTS = {"InteractionsConfig": "config", "fit_and_or": "mobius", "mobius": "mobius", "or_interactions": "mobius",
            "or_values": "mobius", "zeta": "mobius", "salient": "mobius", "compare": "consistency",
            "select_prompts": "prompts", "prompt_values": "values"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
