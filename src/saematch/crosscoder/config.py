"""The crosscoder stage's config: one frozen dataclass, validated in ``__post_init__`` only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from saematch.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class CrosscoderConfig:
    """A BatchTopK crosscoder on the aligned units of a layer pair, and its per-latent analysis."""

    expansion: int = 4  # latents = expansion * max(d_model over the models)
    k: int = 32  # mean active latents per unit (BatchTopK over the batch: k * batch latents kept)
    lr: float = 4e-4  # Adam learning rate
    lr_decay_fraction: float = 0.2  # the lr decays linearly to 0 over this last fraction of steps
    training_tokens: int = 200_000  # aligned units seen in training (steps = training_tokens // batch_size)
    batch_size: int = 1024
    seed: int = 0  # initial weights and data order
    eval_fraction: float = 0.1  # last fraction of units held out (latent scaling, firing statistics, FVU)
    checkpoint_every: int = 50  # steps between checkpoints (resume points)
    log_every: int = 10  # steps between metric logs (progress bar and logger)
    aux_coefficient: float = 1 / 32  # aux-k loss weight (dead latents reconstruct the residual); 0 disables it
    dead_window: int = 0  # units without firing before a latent counts dead for aux-k; 0 = training_tokens // 4
    threshold_momentum: float = 0.99  # EMA of the BatchTopK cut-off, the inference threshold (JumpReLU-style)
    shared_low: float = 0.1  # relative decoder norm ||d_B|| / (||d_A|| + ||d_B||) below this: A-only
    shared_high: float = 0.9  # above this: B-only; in between: shared
    scaling_threshold: float = 0.3  # an exclusive latent whose other-model Latent Scaling ratio nu exceeds this is flagged
    map_alpha: float = 1.0  # ridge penalty of the linear map between the models (scaled units)
    map_rows: int = 20_000  # training units used to fit the linear maps
    analysis_rows: int = 50_000  # held-out units used by the analysis (at most)
    top_units: int = 20  # top units per latent/feature for the Jaccard overlaps of the agreement table
    threads: Optional[int] = None  # torch threads (None: leave as is)

    def __post_init__(self) -> None:
        _check(self.expansion >= 1, "crosscoder.expansion must be >= 1")
        _check(self.k >= 1, "crosscoder.k must be >= 1")
        _check(self.lr > 0, "crosscoder.lr must be positive")
        _check(0.0 <= self.lr_decay_fraction <= 1.0, "crosscoder.lr_decay_fraction must be in [0, 1]")
        _check(self.batch_size >= 1, "crosscoder.batch_size must be >= 1")
        _check(self.training_tokens >= self.batch_size, "crosscoder.training_tokens must be >= crosscoder.batch_size")
        _check(0.0 < self.eval_fraction < 0.5, "crosscoder.eval_fraction must be in (0, 0.5)")
        _check(self.checkpoint_every >= 1, "crosscoder.checkpoint_every must be >= 1")
        _check(self.log_every >= 1, "crosscoder.log_every must be >= 1")
        _check(self.aux_coefficient >= 0, "crosscoder.aux_coefficient must be >= 0")
        _check(self.dead_window >= 0, "crosscoder.dead_window must be >= 0")
        _check(0.0 <= self.threshold_momentum < 1.0, "crosscoder.threshold_momentum must be in [0, 1)")
        _check(0.0 <= self.shared_low < self.shared_high <= 1.0,
               "crosscoder.shared_low and shared_high must satisfy 0 <= shared_low < shared_high <= 1")
        _check(self.map_alpha >= 0, "crosscoder.map_alpha must be >= 0")
        _check(self.map_rows >= 2 and self.analysis_rows >= 2, "crosscoder.map_rows and analysis_rows must be >= 2")
        _check(self.top_units >= 1, "crosscoder.top_units must be >= 1")

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size

    @property
    def dead_units(self) -> int:
        return self.dead_window or max(self.training_tokens // 4, self.batch_size)
