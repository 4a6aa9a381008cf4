"""The transfer stage's config section (``transfer:`` in a run config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from saematch.configfields import check as _check
from saematch.configfields import opt as _opt

MAP_KINDS = ("ridge", "procrustes", "mlp")
TASKS = ("number", "capitalised", "quoted", "after_negation", "before_1900")


@dataclass(frozen=True)
class TransferConfig:
    """Maps between two models' residuals, and SAE, steering and probe transfer through them."""

    enabled: bool = _opt(False, "run the transfer stage (one node per A layer and its best-matching B layer)", hash=False)

    maps: tuple[str, ...] = _opt(MAP_KINDS, "maps fitted in both directions: ridge, procrustes, mlp")
    alphas: tuple[float, ...] = _opt(
        (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4),
        "ridge penalties tried by cross-validation, relative to the mean eigenvalue of the centred training Gram "
        "(||Xc||_F^2 / d), so one grid fits residuals of any scale; the chosen one is reported in both units")
    cv_folds: int = _opt(5, "folds for ridge's alpha (grouped by document when there are enough documents)")
    test_fraction: float = _opt(0.2, "units held out for every score (whole documents) when no split is given; "
                                     "the pipeline node uses the run's held-out split (calibration.heldout_frac)")
    whiten_eps: float = _opt(1e-3, "whitening shrinkage, relative to the mean eigenvalue of each covariance")
    mlp_hidden: int = _opt(512, "hidden width of the nonlinear map (one GELU layer beside a linear skip)")
    mlp_epochs: int = _opt(60, "most epochs of the nonlinear map; training stops earlier when validation loss stalls")
    mlp_patience: int = _opt(5, "epochs without validation improvement before the nonlinear map stops")
    mlp_lr: float = _opt(1e-3, "Adam learning rate of the nonlinear map")
    mlp_weight_decay: float = _opt(1e-4, "AdamW weight decay of the nonlinear map")
    mlp_batch: int = _opt(256, "rows per optimiser step of the nonlinear map")
    mlp_val_fraction: float = _opt(0.15, "training units kept aside for the nonlinear map's early stopping")
    steer_map: str = _opt("ridge", "the map whose linear part carries steering vectors A -> B (and whose SAE "
                                   "transfer is the headline)")
    steering_scales: tuple[float, ...] = _opt((0.25, 0.5, 1.0), "steering-vector norms, as fractions of B's mean "
                                                                "residual norm at the steered layer")
    n_random: int = _opt(4, "random directions of equal norm per scale and concept, isotropic and drawn from B's "
                            "activation covariance (the steering floors); 'beats all' has chance 1 / (n_random + 1)")
    context_units: int = _opt(16, "a unit is 'in' a concept when one of its last this-many units is a keyword")
    min_concept_units: int = _opt(20, "concepts with fewer training units in (or out of) context are skipped, "
                                      "with a warning")
    n_prompts: int = _opt(16, "held-out prompts (B's held-out text) run through B per steering vector")
    prompt_tokens: int = _opt(32, "tokens per steering prompt (after B's prefix)")
    eval_positions: int = _opt(8, "last positions of each prompt whose next-token distribution is scored")
    steer_batch: int = _opt(64, "sequences per forward pass of B while steering", hash=False)
    steer_kinds: tuple[str, ...] = _opt(("diffmean", "feature"), "steering vectors: diffmean (difference of "
                                        "concept means), feature (decoder rows of the most concept-selective "
                                        "matched pair)")
    tasks: tuple[str, ...] = _opt(TASKS, "probe tasks, labelled from the corpus alone: number, capitalised, "
                                         "quoted, after_negation (context-dependent), before_1900 (needs a year in the "
                                         "document ids)")
    probe_C: float = _opt(1.0, "inverse L2 strength of the logistic probes (on standardised inputs)")
    probe_max_iter: int = _opt(500, "most iterations of each logistic probe")
    floor_pct: float = _opt(99.0, "SAE-transfer floor: this percentile of B's per-feature correlations when the "
                                  "random-init control's activations are mapped into B (the same ridge recipe)")
    max_units: Optional[int] = _opt(20000, "seeded subsample of the aligned units before fitting; null keeps all")
    sae_batch: int = _opt(2048, "rows per SAE encode/decode call", hash=False)
    seed: int = _opt(0, "seed of the unit subsample, the folds, the nonlinear map, the prompts and the random "
                        "directions")

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
        _check(0.0 < self.floor_pct < 100.0, "transfer.floor_pct must be in (0, 100)")
        _check(self.max_units is None or self.max_units >= 50, "transfer.max_units must be None or >= 50")
