"""The crosscoder stage's config: one frozen dataclass, validated in ``__post_init__`` only.

Fields are declared with :func:`saematch.configfields.opt` (documentation and hash flag); this
module does not import ``saematch.config``, so the config module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from saematch.configfields import check as _check
from saematch.configfields import opt as _opt
from saematch.devices import OVERRIDE_DOC, check_spec


@dataclass(frozen=True)
class CrosscoderConfig:
    """A BatchTopK crosscoder on the aligned units of a layer pair, and its per-latent analysis."""

    enabled: bool = _opt(False, "run the crosscoder stage (one node per A layer and its best-matching B layer, plus "
                                "the random-init floor)", hash=False)

    layers: Optional[tuple[int, ...]] = _opt(None, "A layers that get a crosscoder node (null: every configured A "
                                                   "layer)", hash=False)
    expansion: int = _opt(4, "latents = expansion * max(d_model over the models)")
    k: int = _opt(32, "mean active latents per unit (BatchTopK over the batch: k * batch latents kept)")
    lr: float = _opt(4e-4, "Adam learning rate")
    lr_decay_fraction: float = _opt(0.2, "the lr decays linearly to 0 over this last fraction of the steps")
    training_tokens: int = _opt(200_000, "aligned units seen in training (steps = training_tokens // batch_size)")
    batch_size: int = _opt(1024, "units per training step (the BatchTopK batch)")
    seed: int = _opt(0, "seed of the first crosscoder's initial weights and data order; seeds = seed, seed + 1, ...")
    seeds: int = _opt(3, "crosscoders trained per node and variant, one per seed; every class fraction is reported "
                         "with its spread (mean, sd, min, max) over them")
    variants: tuple[str, ...] = _opt(("plain",), "dictionaries trained per node: 'plain' (every latent may decode into "
                                                 "both models) and/or 'dedicated' (dedicated_share of the latents may "
                                                 "decode into one model only; Jiralerspong & Bricken 2026)")
    dedicated_share: float = _opt(0.2, "the 'dedicated' variant: share of the latents dedicated to one model, split "
                                       "equally among the models (their other decoders are fixed at 0)")
    whiten_floor: bool = _opt(True, "the random-init floor also trains on A@random's activations whitened and "
                                    "coloured to real A's covariance (the same spectrum), a check that the floor's "
                                    "exclusives do not come from its near-isotropic activations")
    eval_fraction: float = _opt(0.1, "outside a run only (arrays passed to the library): last fraction of the units "
                                     "held out; a run trains on its train documents and evaluates on its test "
                                     "documents (the run's split)")
    checkpoint_every: int = _opt(50, "steps between checkpoints (resume points)", hash=False)
    log_every: int = _opt(10, "steps between metric logs (progress bar and logger)", hash=False)
    aux_coefficient: float = _opt(1 / 32, "aux-k loss weight (dead latents reconstruct the residual); 0 disables it")
    decoder_penalty: Union[Literal["rule"], float] = _opt(
        "rule", "lambda of the decoder-norm-weighted sparsity penalty (Lindsey et al. 2024), added to BatchTopK: "
                "lambda * mean over units of sum_i f_i * sum_m ||d_m,i|| / sqrt(D) (D: each model's total variance in "
                "scaled units). It drives the decoder of a model that does not need latent i to 0, so exclusive "
                "latents can appear; BatchTopK still selects the active latents. 'rule': the largest lambda on a "
                "fixed grid that keeps L0 at k and FVU within 0.01 of lambda = 0 on the package's planted "
                "shared/private case (saematch.crosscoder.rule; fixed before any real run, recorded in every "
                "manifest); a number: that lambda; 0 disables it")
    decoder_penalty_tanh: float = _opt(0.0, "c > 0: penalise tanh(c * f_i * sum_m ||d_m,i|| / sqrt(D)) instead (the "
                                            "saturating form of Anthropic's 2025 update: no pull on large "
                                            "activations); 0: the linear penalty")
    dead_window: int = _opt(0, "units without firing before a latent counts dead for aux-k; 0 = training_tokens // 4")
    threshold_momentum: float = _opt(0.99, "EMA momentum of the BatchTopK cut-off, the inference threshold "
                                           "(JumpReLU-style)")
    shared_low: float = _opt(0.1, "relative decoder norm ||d_B|| / (||d_A|| + ||d_B||) below this: A-only")
    shared_high: float = _opt(0.9, "relative decoder norm above this: B-only; in between: shared")
    scaling_threshold: float = _opt(0.3, "an exclusive latent whose other-model Latent Scaling ratio nu exceeds "
                                         "this is flagged suspect_exclusive")
    map_alpha: float = _opt(1.0, "ridge penalty of the linear maps between the models (scaled units)")
    map_rows: int = _opt(20_000, "training units used to fit the linear maps")
    analysis_rows: int = _opt(50_000, "held-out units used by the analysis and the agreement table (at most)")
    top_units: int = _opt(20, "top units per latent/feature for the Jaccard overlaps of the agreement table")
    threads: Optional[int] = _opt(None, "torch CPU threads while training (None: leave as is)", hash=False)
    device: Optional[str] = _opt(None, OVERRIDE_DOC + " (training; the analysis runs on the CPU)", hash=False)

    def __post_init__(self) -> None:
        _check(self.expansion >= 1, "crosscoder.expansion must be >= 1")
        check_spec(self.device, "crosscoder.device")
        _check(self.k >= 1, "crosscoder.k must be >= 1")
        _check(self.lr > 0, "crosscoder.lr must be positive")
        _check(0.0 <= self.lr_decay_fraction <= 1.0, "crosscoder.lr_decay_fraction must be in [0, 1]")
        _check(self.batch_size >= 1, "crosscoder.batch_size must be >= 1")
        _check(self.training_tokens >= self.batch_size, "crosscoder.training_tokens must be >= crosscoder.batch_size")
        _check(0.0 < self.eval_fraction < 0.5, "crosscoder.eval_fraction must be in (0, 0.5)")
        _check(self.checkpoint_every >= 1, "crosscoder.checkpoint_every must be >= 1")
        _check(self.log_every >= 1, "crosscoder.log_every must be >= 1")
        _check(self.aux_coefficient >= 0, "crosscoder.aux_coefficient must be >= 0")
        _check(self.decoder_penalty == "rule" or self.decoder_penalty >= 0,
               "crosscoder.decoder_penalty must be 'rule' or a number >= 0")
        _check(self.seeds >= 1, "crosscoder.seeds must be >= 1")
        _check(len(self.variants) >= 1 and len(set(self.variants)) == len(self.variants)
               and set(self.variants) <= {"plain", "dedicated"},
               "crosscoder.variants must be a non-empty list of distinct 'plain' / 'dedicated'")
        _check(0.0 < self.dedicated_share < 1.0, "crosscoder.dedicated_share must be in (0, 1)")
        _check(self.decoder_penalty_tanh >= 0, "crosscoder.decoder_penalty_tanh must be >= 0")
        _check(self.dead_window >= 0, "crosscoder.dead_window must be >= 0")
        _check(0.0 <= self.threshold_momentum < 1.0, "crosscoder.threshold_momentum must be in [0, 1)")
        _check(0.0 <= self.shared_low < self.shared_high <= 1.0,
               "crosscoder.shared_low and shared_high must satisfy 0 <= shared_low < shared_high <= 1")
        _check(self.map_alpha >= 0, "crosscoder.map_alpha must be >= 0")
        _check(self.map_rows >= 2 and self.analysis_rows >= 2, "crosscoder.map_rows and analysis_rows must be >= 2")
        _check(self.top_units >= 1, "crosscoder.top_units must be >= 1")
        _check(self.threads is None or self.threads >= 1, "crosscoder.threads must be >= 1 (or null)")

    def penalty(self) -> float:
        """The decoder-penalty lambda in force: the number, or the rule's choice."""
        if self.decoder_penalty == "rule":
            from saematch.crosscoder.rule import penalty_rule

            return penalty_rule().chosen
        return float(self.decoder_penalty)

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size

    @property
    def dead_units(self) -> int:
        return self.dead_window or max(self.training_tokens // 4, self.batch_size)
