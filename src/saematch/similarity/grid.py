"""Scores for one layer pair, and summaries over the layer grid."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from saematch.config import SimilarityConfig
from saematch.similarity.base import get_metric
from saematch.similarity.nulls import score_with_null

log = logging.getLogger(__name__)

BOOTSTRAP_METRICS = ("svcca", "rsa")


def metric_params(cfg: SimilarityConfig) -> dict:
    return {"var": cfg.svcca_var, "inner": cfg.rsa_inner, "outer": cfg.rsa_outer, "k": cfg.mknn_k,
            "alpha": cfg.ridge_alpha, "seed": cfg.seed}


def score_space(X: np.ndarray, Y: np.ndarray, names: tuple[str, ...], cfg: SimilarityConfig, space: str,
                bootstrap: bool = True) -> list[dict]:
    """Every metric in ``names`` on paired rows X[n, d1], Y[n, d2], with nulls (and CIs) where configured."""
    rows = []
    for name in names:
        m = get_metric(name, **metric_params(cfg))
        n_perm = cfg.n_permutations if name in cfg.null_metrics else 0
        n_boot = cfg.n_bootstrap if bootstrap and name in BOOTSTRAP_METRICS else 0
        r = score_with_null(m, X, Y, n_perm, n_boot, cfg.seed)
        if getattr(m, "small_n_", False):
            (log.debug if space == "concept" else log.warning)("%s (%s): %d items for %s/%s kept dims; near 1 by construction, compare with its null",
                        name, space, X.shape[0], m.k_x_, m.k_y_)
        rows.append({"space": space, "metric": name, "n_items": int(X.shape[0]), **r._asdict(),
                     "k_x": getattr(m, "k_x_", None), "k_y": getattr(m, "k_y_", None),
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


def depth_agreement(best: pd.DataFrame) -> pd.DataFrame:
    """Per metric: Spearman between relative depth of A's layers and of their best B layers."""
    rows = []
    for metric, g in best.groupby("metric"):
        if len(g) >= 3 and g["depth_b"].nunique() > 1:
            res = spearmanr(g["depth_a"], g["depth_b"])
            rho, p = float(res.statistic), float(res.pvalue)
        else:
            rho = p = float("nan")
        rows.append({"metric": metric, "spearman_depth": rho, "p_value": p, "n_layers": len(g)})
    return pd.DataFrame(rows)
