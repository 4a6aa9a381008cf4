"""Scores for one layer pair, and summaries over the layer grid."""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import permutation_test, rankdata

from saematch.config import SimilarityConfig
from saematch.similarity.base import get_metric
from saematch.similarity.nulls import score_with_null

log = logging.getLogger(__name__)

BOOTSTRAP_METRICS = ("svcca", "rsa")


def metric_params(cfg: SimilarityConfig, name: str) -> dict:
    """The metric's own hyperparameters: ``similarity.metric_params.<name>`` and nothing else."""
    return dict(cfg.metric_params.get(name, {}))


def score_space(X: np.ndarray, Y: np.ndarray, names: tuple[str, ...], cfg: SimilarityConfig, space: str,
                bootstrap: bool = True) -> list[dict]:
    """Every metric in ``names`` on paired rows X[n, d1], Y[n, d2], with nulls (and CIs) where configured."""
    rows = []
    for name in names:
        m = get_metric(name, **metric_params(cfg, name))
        n_perm = cfg.n_permutations if name in cfg.null_metrics else 0
        n_boot = cfg.n_bootstrap if bootstrap and name in BOOTSTRAP_METRICS else 0
        r = score_with_null(m, X, Y, n_perm, n_boot, cfg.seed)
        row = r._asdict()
        diag = row.pop("diagnostics")
        if diag.get("degenerate"):
            (log.debug if space == "concept" else log.warning)(
                "%s (%s): %d items for %s/%s kept dims; degenerate (pulled towards 1 by construction)",
                name, space, X.shape[0], diag.get("k_x"), diag.get("k_y"))
        rows.append({"space": space, "metric": name, "n_items": int(X.shape[0]), **row,
                     "k_x": diag.get("k_x"), "k_y": diag.get("k_y"), "degenerate": diag.get("degenerate"),
                     "higher_is_similar": m.higher_is_similar})
    return rows


def best_layers(scores: pd.DataFrame, n_layers_a: int, n_layers_b: int) -> pd.DataFrame:
    """For each (metric, layer_a): the best layer_b, with relative depths ((L + 1) / n_layers)."""
    out = []
    for (metric, la), g in scores.groupby(["metric", "layer_a"]):
        hi = bool(g["higher_is_similar"].iloc[0])
        row = g.loc[g["score"].idxmax() if hi else g["score"].idxmin()]
        out.append({"metric": metric, "layer_a": la, "best_layer_b": int(row["layer_b"]), "score": row["score"],
                    "depth_a": (la + 1) / n_layers_a, "depth_b": (row["layer_b"] + 1) / n_layers_b})
    return pd.DataFrame(out)


class DepthTest(NamedTuple):
    """Spearman ρ between A's layer depths and the depths of their best B layers, with a one-sided p-value.

    p_value: chance of ρ at least this large when the best B layers are assigned to A's layers at random
    (alternative: deeper A layers pick deeper B layers).  p_method: 'exact' (all n! pairings enumerated,
    n <= EXACT_MAX_LAYERS), 'monte-carlo (K pairings)', or 'none'; p_reason: why there is no p-value ('' if there is).
    """

    spearman_depth: float
    p_value: float
    p_method: str
    p_reason: str
    n_layers: int


MIN_DEPTH_LAYERS = 4  # with 3 layers the smallest attainable one-sided p is 1/6: no test can reject
EXACT_MAX_LAYERS = 8  # 8! = 40,320 pairings: exact enumeration stays well under a second


def depth_test(depth_a: np.ndarray, depth_b: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> DepthTest:
    """Spearman ρ of ``depth_b[n]`` against ``depth_a[n]`` and its permutation p-value (ties in depth_b keep
    their average ranks in every pairing)."""
    x = np.asarray(depth_a, np.float64)
    y = np.asarray(depth_b, np.float64)
    n = len(x)
    if n < 2 or np.unique(x).size < 2 or np.unique(y).size < 2:
        why = (f"needs >= 2 layers, got {n}" if n < 2 else
               "every A layer has the same best B layer" if np.unique(y).size < 2 else "A's layers share one depth")
        return DepthTest(float("nan"), float("nan"), "none", why, n)
    rx, ry = rankdata(x), rankdata(y)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())

    def rho(r: np.ndarray, axis: int = -1) -> np.ndarray:  # ranks only move with the pairing: ρ is a dot product
        return np.sum(rx * r, axis=axis)

    observed = float(rho(ry))
    if n < MIN_DEPTH_LAYERS:
        return DepthTest(observed, float("nan"), "none", f"needs >= {MIN_DEPTH_LAYERS} layers, got {n}", n)
    exact = math.factorial(n) <= math.factorial(EXACT_MAX_LAYERS)
    res = permutation_test((ry,), rho, permutation_type="pairings", vectorized=True, alternative="greater",
                           n_resamples=np.inf if exact else n_resamples, random_state=np.random.default_rng([seed, 5]))
    method = "exact" if exact else f"monte-carlo ({n_resamples} pairings)"
    return DepthTest(observed, float(res.pvalue), method, "", n)


def depth_agreement(best: pd.DataFrame, n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Per metric: Spearman between relative depth of A's layers and of their best B layers, with its
    permutation p-value (:func:`depth_test`)."""
    rows = []
    for metric, g in best.groupby("metric"):
        t = depth_test(g["depth_a"].to_numpy(), g["depth_b"].to_numpy(), n_resamples, seed)
        rows.append({"metric": metric, **t._asdict()})
    return pd.DataFrame(rows, columns=["metric", *DepthTest._fields])
