"""The decoder-penalty rule: lambda chosen on planted data, fixed before any real run.

A decoder-norm penalty large enough to zero a decoder also shrinks activations and costs
reconstruction, and tuning lambda while watching a real pair's (or its floor's) shared fraction
tunes the result.  So lambda comes from a rule that sees only the package's planted shared/private
case (:func:`saematch.crosscoder.planted.planted` with :data:`CASE`), trained with :data:`TRAIN`:

    the largest lambda on GRID whose held-out BatchTopK L0 stays at least (1 - L0_TOLERANCE) * k and whose
    held-out FVU (mean over the two models) is at most FVU_TOLERANCE above lambda = 0's.

Everything is fixed here (data, seeds, one CPU thread), so the rule is deterministic; a run with
``crosscoder.decoder_penalty: rule`` records :meth:`RuleResult.to_dict` (rule, grid, per-lambda table,
choice) in every crosscoder manifest.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from saematch.crosscoder.config import CrosscoderConfig

log = logging.getLogger(__name__)

GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
FVU_TOLERANCE = 0.01  # one percent of the variance, absolute
L0_TOLERANCE = 0.05
CASE = {"n": 12_000, "seed": 1, "sigma": 0.45}  # noisy: the case where MSE alone leaves weak decoders behind
TRAIN = CrosscoderConfig(expansion=2, k=2, lr=3e-3, training_tokens=300_000, batch_size=256,
                         checkpoint_every=10**9, log_every=100, seed=0, decoder_penalty=0.0)
RULE = (f"largest lambda on {list(GRID)} with held-out BatchTopK L0 >= {1 - L0_TOLERANCE:g} k and held-out FVU "
        f"(mean over models) <= FVU(lambda=0) + {FVU_TOLERANCE:g}, on planted(n={CASE['n']}, seed={CASE['seed']}, "
        f"sigma={CASE['sigma']}) with k={TRAIN.k}, expansion={TRAIN.expansion}, {TRAIN.training_tokens} units, "
        f"seed {TRAIN.seed}, 1 CPU thread")


@dataclass(frozen=True)
class RuleResult:
    """chosen: the rule's lambda; table: per grid lambda, its held-out l0, fvu_a, fvu_b, fvu, the planted
    features' correct-class fraction (for information: the rule does not use it) and ``feasible``."""

    chosen: float
    grid: tuple[float, ...]
    table: tuple[dict, ...]
    rule: str = RULE

    def to_dict(self) -> dict:
        return {"rule": self.rule, "grid": list(self.grid), "chosen": self.chosen, "table": [dict(r) for r in self.table]}


def choose(table: Sequence[dict], k: int, fvu_tolerance: float = FVU_TOLERANCE,
           l0_tolerance: float = L0_TOLERANCE) -> tuple[float, list[bool]]:
    """The largest feasible lambda of ``table`` (rows with ``lambda``, ``l0``, ``fvu``; one has lambda 0) and the
    feasibility of every row.  lambda = 0 is feasible by definition, so a choice always exists."""
    base = [r for r in table if r["lambda"] == 0.0]
    if not base:
        raise ValueError("the penalty rule's grid must contain lambda = 0")
    ref = base[0]["fvu"]
    ok = [r["lambda"] == 0.0 or (r["l0"] >= (1 - l0_tolerance) * k and r["fvu"] <= ref + fvu_tolerance)
          for r in table]
    return max(r["lambda"] for r, good in zip(table, ok) if good), ok


@torch.no_grad()
def batch_l0(cc: object, xs: Sequence[torch.Tensor], batch: int) -> float:
    """Mean active latents per unit under training's BatchTopK, over consecutive batches of the given units."""
    xs = cc.scale_in(xs)
    active, n = 0, 0
    for s in range(0, len(xs[0]) - batch + 1, batch):
        f, _ = cc.batch_topk(cc.pre_acts([x[s:s + batch] for x in xs]))
        active += int((f > 0).sum())
        n += batch
    return active / max(n, 1)


def evaluate_grid(grid: Sequence[float] = GRID, cfg: CrosscoderConfig = TRAIN, case: dict = CASE) -> list[dict]:
    """Train the planted case at every lambda of ``grid`` (one thread, on the CPU) and measure it held out."""
    from saematch.crosscoder.diagnostics import analyse_crosscoder
    from saematch.crosscoder.planted import best_latents, planted
    from saematch.crosscoder.train import default_rows, train_crosscoder

    data = planted(**case)
    _, test = default_rows(len(data.xA), cfg)
    held = [torch.from_numpy(data.xA[test]), torch.from_numpy(data.xB[test])]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="saematch-penalty-rule-") as tmp:
            for lam in grid:
                c = replace(cfg, decoder_penalty=float(lam))
                res = train_crosscoder([data.xA, data.xB], c, Path(tmp) / f"l{lam:g}")
                an = analyse_crosscoder(res.crosscoder, [data.xA, data.xB], c)
                s, cls = an.summary, an.latents["class"].to_numpy()
                W = [res.crosscoder.dec(m).detach().double().numpy() for m in range(2)]
                correct = float(np.mean([cls[j] == t for t, j, _ in best_latents(W, data)]))
                rows.append({"lambda": float(lam), "l0": batch_l0(res.crosscoder, held, cfg.batch_size),
                             "fvu_a": s["fvu_a"], "fvu_b": s["fvu_b"], "fvu": (s["fvu_a"] + s["fvu_b"]) / 2,
                             "correct_class_fraction": correct})
    finally:
        torch.set_num_threads(old)
    return rows


@functools.lru_cache(maxsize=None)
def penalty_rule() -> RuleResult:
    """The rule's lambda (computed once per process; about half a minute on one core)."""
    table = evaluate_grid()
    chosen, ok = choose(table, TRAIN.k)
    rows = tuple({**r, "feasible": bool(good)} for r, good in zip(table, ok))
    log.info("decoder-penalty rule: lambda = %g (%s)", chosen,
             "; ".join(f"{r['lambda']:g}: L0 {r['l0']:.2f}, FVU {r['fvu']:.3f}" for r in rows))
    return RuleResult(chosen, tuple(float(x) for x in GRID), rows)
