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
