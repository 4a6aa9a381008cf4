"""The interactions stage's config: one frozen dataclass, validated in ``__post_init__`` only.

This module does not import ``saematch.config``, so the config module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from saematch.configfields import check as _check
from saematch.configfields import opt as _opt

BASELINES = ("mean", "zero", "pad")


@dataclass(frozen=True)
class InteractionsConfig:
    """AND/OR interactions between input words, per model, and how much two models share them."""

    enabled: bool = _opt(False, "run the interactions stage (one node per model pair)", hash=False)
    n_words: int = _opt(10, "input variables per prompt: words chosen at random among the non-stopwords; every "
                            "subset of them is evaluated (2^n masked inputs per model and baseline)")
    n_prompts: int = _opt(20, "prompts kept (sentences of held-out documents where both models' top-1 next word agrees)")
    max_sentences: int = _opt(2000, "held-out sentences tried at most when looking for prompts")
    max_prompt_tokens: int = _opt(64, "prompts longer than this in either model's tokens are skipped")
    baseline: Literal["mean", "zero", "pad"] = _opt(
        "mean", "what a masked word's tokens become: the mean input embedding over the train documents, a zero "
                "embedding, or the embedding of the pad (else unk, else eos) token")
    ceiling_baseline: Literal["mean", "zero", "pad"] = _opt(
        "zero", "the second baseline of the ceiling: the same model under two baselines (the noise of the definition)")
    salient: Literal["fraction", "topk"] = _opt(
        "fraction", "salient interactions: |I| above salient_fraction * |v(N) - v(empty)|, or the top_k by |I|")
    salient_fraction: float = _opt(0.05, "threshold of the 'fraction' rule, relative to |v(N) - v(empty)|")
    top_k: int = _opt(20, "interactions kept by the 'topk' rule (AND and OR together)")
    andor_steps: int = _opt(1500, "gradient steps of the sparsifying AND-OR split (Adam, lr decaying linearly to 0)")
    andor_lr: float = _opt(0.02, "learning rate of the split, in units of |v(N) - v(empty)|")
    noise_bound: float = _opt(0.02, "bound on the fitted offsets q(S) removed from v(S) before the split, relative to "
                                    "|v(N) - v(empty)|; 0 fits the split to v exactly")
    n_bootstrap: int = _opt(1000, "bootstrap resamples over documents for every CI")
    seed: int = _opt(0, "seed of the word choice, the floor's prompt pairing and the bootstrap")
    batch_size: int = _opt(64, "masked inputs per forward pass", hash=False)
    threads: Optional[int] = _opt(None, "torch CPU threads while the models run (None: leave as is)", hash=False)

    def __post_init__(self) -> None:
        _check(2 <= self.n_words <= 16, "interactions.n_words must be in [2, 16] (2^n inputs per prompt)")
        _check(self.n_prompts >= 2, "interactions.n_prompts must be >= 2 (the prompt floor pairs different prompts)")
        _check(self.max_sentences >= 1, "interactions.max_sentences must be >= 1")
        _check(self.max_prompt_tokens >= 4, "interactions.max_prompt_tokens must be >= 4")
        _check(self.baseline != self.ceiling_baseline, "interactions.ceiling_baseline must differ from "
                                                       "interactions.baseline (the ceiling compares the two)")
        _check(0.0 < self.salient_fraction < 1.0, "interactions.salient_fraction must be in (0, 1)")
        _check(self.top_k >= 1, "interactions.top_k must be >= 1")
        _check(self.andor_steps >= 0, "interactions.andor_steps must be >= 0")
        _check(self.andor_lr > 0, "interactions.andor_lr must be positive")
        _check(0.0 <= self.noise_bound < 1.0, "interactions.noise_bound must be in [0, 1)")
        _check(self.n_bootstrap >= 0, "interactions.n_bootstrap must be >= 0")
        _check(self.batch_size >= 1, "interactions.batch_size must be >= 1")
        _check(self.threads is None or self.threads >= 1, "interactions.threads must be >= 1 (or null)")
