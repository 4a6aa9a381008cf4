"""How much two sets of interactions agree: per prompt, pooled, with CIs over documents.

Two explanations of the same target (two models, or one model under two baselines) share a salient
interaction when it is salient in both, of the same kind (AND or OR) and subset, with the same sign.

* jaccard: shared / salient in either (keyed by kind and subset);
* share: the part of each side's total |I| (every non-empty subset, AND and OR) that the shared
  interactions carry, averaged over the two sides;
* order: mean |S| of the shared and of the model-specific salient interactions (salient on one side,
  not shared);
* cancellation: 1 - |sum I| / sum |I| within a side's shared or specific interactions (0: all one
  sign; near 1: positive and negative effects cancel), averaged over the two sides.

CIs resample documents (prompts of one document move together), percentile intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saematch.interactions.mobius import salient

STATS = ("jaccard", "share", "order_shared", "order_specific", "cancel_shared", "cancel_specific")


def _cancel(vals: list[float]) -> float:
    tot = float(np.sum(np.abs(vals))) if vals else 0.0
    return 1.0 - abs(float(np.sum(vals))) / tot if tot > 0 else float("nan")


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def compare(split_a: tuple[np.ndarray, np.ndarray, float], split_b: tuple[np.ndarray, np.ndarray, float],
            rule: str, fraction: float, top_k: int) -> dict[str, Any]:
    """Agreement of two splits, each ``(and_X, or_X, scale)``: the measures of the module doc, the salient counts,
    and the orders of the shared and specific interactions (lists, for the histograms)."""
    sal = [salient(a, o, s, rule, fraction, top_k) for a, o, s in (split_a, split_b)]
    union = set(sal[0]) | set(sal[1])
    shared = {k for k in set(sal[0]) & set(sal[1]) if np.sign(sal[0][k]) == np.sign(sal[1][k])}
    shares, c_sh, c_sp, specific_orders = [], [], [], []
    for side, (a, o, _s) in zip(sal, (split_a, split_b)):
        total = float(np.abs(a[1:]).sum() + np.abs(o[1:]).sum())
        shares.append(sum(abs(side[k]) for k in shared) / total if total > 0 else float("nan"))
        c_sh.append(_cancel([side[k] for k in shared]))
        spec = [k for k in side if k not in shared]
        c_sp.append(_cancel([side[k] for k in spec]))
        specific_orders += [bin(k[1]).count("1") for k in spec]
    shared_orders = [bin(k[1]).count("1") for k in shared]
    return {"n_salient_a": len(sal[0]), "n_salient_b": len(sal[1]), "n_shared": len(shared),
            "jaccard": len(shared) / len(union) if union else float("nan"), "share": _nanmean(shares),
            "order_shared": float(np.mean(shared_orders)) if shared_orders else float("nan"),
            "order_specific": float(np.mean(specific_orders)) if specific_orders else float("nan"),
            "cancel_shared": _nanmean(c_sh), "cancel_specific": _nanmean(c_sp),
            "shared_orders": shared_orders, "specific_orders": specific_orders,
            "shared_keys": sorted(shared)}


def cluster_ci(x_P: np.ndarray, group_P: np.ndarray, n_boot: int, seed: int,
               weight_P: np.ndarray | None = None) -> tuple[float, float, float, int]:
    """(mean, 95% low, 95% high, prompts used) of a per-prompt statistic, weighted by ``weight_P`` (a pooled ratio:
    sum w x / sum w); prompts where it is undefined (nan) are left out; documents resampled with replacement."""
    x = np.asarray(x_P, dtype=np.float64)
    w = np.ones_like(x) if weight_P is None else np.asarray(weight_P, dtype=np.float64)
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return float("nan"), float("nan"), float("nan"), 0
    x, w, g = x[ok], w[ok], np.asarray(group_P)[ok]
    groups, inv = np.unique(g, return_inverse=True)
    num = np.bincount(inv, weights=w * x, minlength=len(groups))
    den = np.bincount(inv, weights=w, minlength=len(groups))
    est = float(num.sum() / den.sum())
    if n_boot == 0 or len(groups) < 2:
        return est, float("nan"), float("nan"), int(ok.sum())
    rng = np.random.default_rng([seed, 29])
    draws = rng.integers(len(groups), size=(n_boot, len(groups)))
    reps = num[draws].sum(1) / np.maximum(den[draws].sum(1), 1e-300)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return est, float(lo), float(hi), int(ok.sum())


def pooled(rows: Any, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per comparison, each statistic of :data:`STATS` with its CI over documents.  Orders pool every interaction
    (weighted by counts); the others average prompts."""
    out = []
    for name, g in rows.groupby("comparison", sort=False):
        rec: dict[str, Any] = {"comparison": name, "prompts": int(len(g))}
        for stat in STATS:
            weight = g["n_shared"] if stat == "order_shared" else (
                g["n_salient_a"] + g["n_salient_b"] - 2 * g["n_shared"] if stat == "order_specific" else None)
            est, lo, hi, used = cluster_ci(g[stat].to_numpy(), g["doc"].to_numpy(), n_boot, seed,
                                           None if weight is None else weight.to_numpy())
            rec.update({stat: est, f"{stat}_lo": lo, f"{stat}_hi": hi})
        for diff, (x, y) in {"order_gap": ("order_specific", "order_shared"),
                             "cancel_gap": ("cancel_specific", "cancel_shared")}.items():
            est, lo, hi, used = cluster_ci((g[x] - g[y]).to_numpy(), g["doc"].to_numpy(), n_boot, seed)
            rec.update({diff: est, f"{diff}_lo": lo, f"{diff}_hi": hi, f"{diff}_prompts": used})
        out.append(rec)
    return out
