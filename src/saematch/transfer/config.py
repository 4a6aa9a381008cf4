"""The transfer stage's config section (``transfer:`` in a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from saematch.errors import ConfigError

MAP_KINDS = ("ridge", "procrustes", "mlp")
TASKS = ("number", "capitalised", "quoted", "before_1900")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class TransferConfig:
    """Maps between two models' residuals, and SAE, steering and probe transfer through them."""

    enabled: bool = field(default=False, metadata={"doc": "run the transfer stage (one node per A layer and its best-matching B layer)", "hash": False})

    maps: tuple[str, ...] = MAP_KINDS  # maps fitted in both directions: ridge, procrustes, mlp
    # ridge penalties, relative to the mean eigenvalue of the centred training Gram (||Xc||_F^2 / d),
    # so one grid fits residuals of any scale; the chosen one is reported in both units
    alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)
    cv_folds: int = 5  # folds for ridge's alpha (grouped by document when documents are known)
    test_fraction: float = 0.2  # units held out for every score (whole documents when known)
    whiten_eps: float = 1e-3  # whitening shrinkage, relative to the mean eigenvalue of each covariance
    mlp_hidden: int = 512  # hidden width of the nonlinear map (one GELU layer beside a linear skip)
    mlp_epochs: int = 60  # most epochs; training stops earlier when validation loss stalls
    mlp_patience: int = 5  # epochs without validation improvement before stopping
    mlp_lr: float = 1e-3  # Adam learning rate
    mlp_weight_decay: float = 1e-4  # AdamW weight decay
    mlp_batch: int = 256  # rows per step
    mlp_val_fraction: float = 0.15  # training units kept aside for early stopping
    steer_map: str = "ridge"  # whose linear part carries steering vectors A -> B
    steering_scales: tuple[float, ...] = (0.25, 0.5, 1.0)  # vector norm as a fraction of B's mean residual norm
    n_random: int = 4  # random directions of equal norm per scale (the floor)
    context_units: int = 16  # a unit is "in" a concept when one of its last this-many units is a keyword
    min_concept_units: int = 20  # concepts with fewer in-context training units are skipped (recorded)
    n_prompts: int = 16  # held-out prompts run through B per steering vector
    prompt_tokens: int = 32  # tokens per prompt
    eval_positions: int = 8  # last positions of each prompt whose next-token distribution is scored
    steer_batch: int = 64  # sequences per forward pass of B
    steer_kinds: tuple[str, ...] = ("diffmean", "feature")  # diff of concept means; matched-feature decoders
    tasks: tuple[str, ...] = TASKS  # probe tasks, labelled from the corpus alone
    probe_C: float = 1.0  # inverse L2 strength of the logistic probes (on standardised inputs)
    probe_max_iter: int = 500
    max_units: Optional[int] = 20000  # subsample units (seeded) before fitting; None keeps all
    sae_batch: int = 2048  # rows per SAE encode/decode call
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.maps if m not in MAP_KINDS]
        _check(not bad, f"transfer.maps: unknown map '{bad[0] if bad else ''}' (choose from {', '.join(MAP_KINDS)})")
        _check("ridge" in self.maps, "transfer.maps must include 'ridge' (the reference map)")
        _check(self.steer_map in self.maps, f"transfer.steer_map '{self.steer_map}' is not in transfer.maps")
        _check(len(self.alphas) > 0 and all(a > 0 for a in self.alphas), "transfer.alphas must be positive")
        _check(self.cv_folds >= 2, "transfer.cv_folds must be at least 2")
        _check(0.0 < self.test_fraction < 0.9, "transfer.test_fraction must be in (0, 0.9)")
        _check(0.0 < self.mlp_val_fraction < 0.9, "transfer.mlp_val_fraction must be in (0, 0.9)")
        _check(self.mlp_hidden > 0 and self.mlp_epochs > 0 and self.mlp_batch > 0, "transfer.mlp_* must be positive")
        _check(self.whiten_eps >= 0, "transfer.whiten_eps must be >= 0")
        _check(all(s > 0 for s in self.steering_scales), "transfer.steering_scales must be positive")
        _check(self.n_random >= 1, "transfer.n_random must be at least 1")
        _check(self.eval_positions >= 1 and self.prompt_tokens > self.eval_positions,
               "transfer.prompt_tokens must exceed transfer.eval_positions >= 1")
        bad = [t for t in self.tasks if t not in TASKS]
        _check(not bad, f"transfer.tasks: unknown task '{bad[0] if bad else ''}' (choose from {', '.join(TASKS)})")
        bad = [k for k in self.steer_kinds if k not in ("diffmean", "feature")]
        _check(not bad, f"transfer.steer_kinds: unknown kind '{bad[0] if bad else ''}' (diffmean, feature)")
        _check(self.max_units is None or self.max_units >= 50, "transfer.max_units must be None or >= 50")
