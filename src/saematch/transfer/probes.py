"""Probe transfer: logistic probes trained on A, applied to B's activations mapped into A.

Per task and layer pair one row holds:

* ``acc_a``: A's probe on A's held-out units (how decodable the label is in A);
* ``acc_transfer``: A's probe on B's held-out units mapped B -> A;
* ``acc_b``: B's own probe on B's held-out units (the ceiling for B);
* ``chance``: accuracy of always answering the training majority class;
* the same three as balanced accuracy (``bacc_*``, chance 0.5), since most
  tasks are imbalanced;
* floors: the same probe recipe trained and scored on each control in A's place
  (``bacc_<name>``: the random-init network, the input embeddings = token identity);
* ``bacc_transfer_lo``/``_hi``: a percentile CI resampling held-out documents
  (``n_test_docs`` of them: for a document-level label that is the effective sample).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import pandas as pd

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def check_labels(y: np.ndarray, task: str, where: str) -> None:
    """One clear error when a task's labels have a single class."""
    classes = np.unique(y)
    if len(classes) < 2:
        only = "positive" if len(classes) and classes[0] else "negative"
        raise SaematchError(
            f"probe task '{task}' has only {only} labels in the {where} units ({len(y)} units); "
            f"a probe needs both classes: use more text or drop '{task}' from transfer.tasks"
        )


def fit_probe(X: np.ndarray, y: np.ndarray, task: str, C: float = 1.0, max_iter: int = 500, seed: int = 0) -> Any:
    """A standardise + L2 logistic-regression pipeline fitted on (X, y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_labels(y, task, "training")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    return probe.fit(np.asarray(X, np.float64), y)


def _acc(probe: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    pred = probe.predict(np.asarray(X, np.float64))
    return float(accuracy_score(y, pred)), float(balanced_accuracy_score(y, pred))


def bacc_ci(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_boot: int = 500, seed: int = 0,
            level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of balanced accuracy, resampling whole groups (documents) from per-group counts."""
    uniq, inv = np.unique(groups, return_inverse=True)
    if len(uniq) < 2:
        return float("nan"), float("nan")
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp, pos = np.bincount(inv, y & pred, len(uniq)), np.bincount(inv, y, len(uniq))
    tn, neg = np.bincount(inv, ~y & ~pred, len(uniq)), np.bincount(inv, ~y, len(uniq))
    pick = np.random.default_rng(seed).integers(0, len(uniq), (n_boot, len(uniq)))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = 0.5 * (tp[pick].sum(1) / pos[pick].sum(1) + tn[pick].sum(1) / neg[pick].sum(1))
    stats = stats[np.isfinite(stats)]  # a replicate without one class has no balanced accuracy
    if not len(stats):
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def probe_transfer(
    XA_tr: np.ndarray, XB_tr: np.ndarray, y_tr: np.ndarray, XA_te: np.ndarray, XB_te: np.ndarray, y_te: np.ndarray,
    XB_te_in_A: dict[str, np.ndarray], task: str, C: float = 1.0, max_iter: int = 500, seed: int = 0,
    groups_te: Optional[np.ndarray] = None, floors: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None,
) -> list[dict[str, Any]]:
    """Train probes on A and on B; score A's probe on B mapped into A, one row per map in ``XB_te_in_A``.

    ``floors[name] = (X_train, X_test)``: a control's activations on the same units, probed the same way.
    ``groups_te``: each held-out unit's document, for the CIs (default: each unit its own group).
    """
    check_labels(y_te, task, "held-out")
    groups = np.arange(len(y_te)) if groups_te is None else np.asarray(groups_te)
    probe_a = fit_probe(XA_tr, y_tr, task, C, max_iter, seed)
    probe_b = fit_probe(XB_tr, y_tr, task, C, max_iter, seed)
    acc_a, bacc_a = _acc(probe_a, XA_te, y_te)
    acc_b, bacc_b = _acc(probe_b, XB_te, y_te)
    majority = int(np.mean(y_tr) >= 0.5)
    base = {
        "task": task, "n_train": int(len(y_tr)), "n_test": int(len(y_te)), "pos_rate": float(np.mean(y_te)),
        "chance": float(np.mean(y_te == majority)), "acc_a": acc_a, "acc_b": acc_b, "bacc_a": bacc_a, "bacc_b": bacc_b,
        "n_test_docs": int(len(np.unique(groups))),
    }
    for name, (F_tr, F_te) in (floors or {}).items():
        base[f"bacc_{name}"] = _acc(fit_probe(F_tr, y_tr, task, C, max_iter, seed), F_te, y_te)[1]
    rows = []
    for kind, X in XB_te_in_A.items():
        acc_t, bacc_t = _acc(probe_a, X, y_te)
        lo, hi = bacc_ci(y_te, probe_a.predict(np.asarray(X, np.float64)), groups, seed=seed)
        rows.append({**base, "map": kind, "acc_transfer": acc_t, "bacc_transfer": bacc_t,
                     "bacc_transfer_lo": lo, "bacc_transfer_hi": hi,
                     "transfer_over_b": acc_t / acc_b if acc_b > 0 else float("nan")})
    return rows


def probe_matrix(rows: pd.DataFrame, value: str = "bacc_transfer", map_kind: str = "ridge") -> pd.DataFrame:
    """Tasks x layer pairs (``A_LXX__B_LYY`` columns) of one value, from concatenated probe tables."""
    rows = rows[rows["map"] == map_kind]
    df = rows.assign(pair=[f"{a}_L{la:02d}__{b}_L{lb:02d}" for a, la, b, lb in
                           zip(rows["model_a"], rows["layer_a"], rows["model_b"], rows["layer_b"])])
    return df.pivot_table(index="task", columns="pair", values=value, aggfunc="first")
