"""Held-out matching: pair features on one split of the units, score the pairs on the other.

Hungarian matching picks, among F_A x F_B candidate correlations, the largest
ones; on the units it was fitted to, a pair's correlation is inflated by that
selection (pure-noise features get "lucky" partners).  Here features are paired
on the *train* units only and every pair is reported with its correlation on the
*test* units, which the selection never saw.  Units are split by document,
because the units of one document are correlated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saematch.artifacts import atomic_path, read_json, write_json
from saematch.errors import ArtifactError, SaematchError

log = logging.getLogger(__name__)

HELDOUT_FILE = "heldout.parquet"
INFO_FILE = "heldout.json"


def split_units(doc_of_unit_N: np.ndarray, frac: float = 0.5, seed: int = 0) -> np.ndarray:
    """Boolean train mask ``[N]`` that keeps every document whole on one side.

    The documents are shuffled with ``seed`` and taken in that order until the
    train side holds the share of units closest to ``frac`` (at least one
    document on each side).  Raises when fewer than two documents exist, since
    one side would then be empty.
    """
    doc = np.asarray(doc_of_unit_N)
    if doc.ndim != 1 or len(doc) == 0:
        raise SaematchError("split_units needs a non-empty 1-D array of document ids, one per unit")
    if not 0.0 < frac < 1.0:
        raise SaematchError(f"the held-out split fraction must be in (0, 1), got {frac}")
    uniq, inv, counts = np.unique(doc, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise SaematchError(f"cannot split {len(doc)} units into train and test by document: "
                            f"they come from {len(uniq)} document(s), at least 2 are needed")
    order = np.random.default_rng(seed).permutation(len(uniq))
    cum = np.cumsum(counts[order])[:-1]  # train sizes for k = 1 .. n_docs - 1 documents
    k = int(np.argmin(np.abs(cum - frac * len(doc)))) + 1
    train_doc = np.zeros(len(uniq), bool)
    train_doc[order[:k]] = True
    return train_doc[inv.ravel()]


def shuffle_units(X: sp.csr_matrix, seed: int = 0) -> sp.csr_matrix:
    """Rows of X permuted with ``seed``: the unit-shuffle floor (pairs no unit with its own)."""
    X = sp.csr_matrix(X)
    return X[np.random.default_rng([seed, 7]).permutation(X.shape[0])]


def _column_moments(Xc: sp.csc_matrix, cols: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """Selected columns, their means and their standard deviations (two-pass, float64)."""
    N = Xc.shape[0]
    sub = Xc[:, cols]
    sub.sum_duplicates()
    counts = np.diff(sub.indptr)
    col = np.repeat(np.arange(len(cols)), counts)
    data = sub.data.astype(np.float64)
    mean = np.bincount(col, data, minlength=len(cols)) / N
    ss = np.bincount(col, (data - mean[col]) ** 2, minlength=len(cols)) + (N - counts) * mean ** 2
    rms = np.sqrt(np.bincount(col, data ** 2, minlength=len(cols)) / N)
    std = np.sqrt(ss / N)
    std[(std == 0) | (std <= 1e-9 * rms)] = 0.0  # constant columns (up to rounding)
    return sub, mean, std


def pair_correlations(XA: sp.spmatrix, XB: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact Pearson correlation ``[P]`` of column ``rows[i]`` of XA with column ``cols[i]`` of XB.

    Over all N units (rows of XA and XB), from sparse column products: only the
    selected columns are touched and no dense [N, F] matrix is built.  A column
    that is constant over the units has no correlation: its pairs get NaN.
    """
    rows = np.asarray(rows, np.int64).ravel()
    cols = np.asarray(cols, np.int64).ravel()
    if XA.shape[0] != XB.shape[0]:
        raise SaematchError(f"feature activations cover different units ({XA.shape[0]} vs {XB.shape[0]})")
    if len(rows) != len(cols):
        raise SaematchError(f"pair_correlations needs as many A features as B features, "
                            f"got {len(rows)} and {len(cols)}")
    for name, idx, F in (("A", rows, XA.shape[1]), ("B", cols, XB.shape[1])):
        if len(idx) and (idx.min() < 0 or idx.max() >= F):
            raise SaematchError(f"feature index out of range for model {name} (it has {F} features)")
    if XA.shape[0] < 2:
        raise SaematchError("correlation needs at least two units")
    if len(rows) == 0:
        return np.zeros(0)
    N = XA.shape[0]
    sa, ma, da = _column_moments(sp.csc_matrix(XA), rows)
    sb, mb, db = _column_moments(sp.csc_matrix(XB), cols)
    cross = np.asarray(sa.multiply(sb).sum(axis=0), np.float64).ravel()
    cov = cross / N - ma * mb
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (da * db)
    corr[(da == 0) | (db == 0)] = np.nan
    return np.clip(corr, -1.0, 1.0)


@dataclass(frozen=True)
class HeldOut:
    """Feature pairs fitted on the train units and scored on the test units.

    feature_a, feature_b: paired feature indices ``[P]``, sorted by corr_train, descending.
    corr_train: each pair's correlation on the train units (the one the assignment maximised;
        inflated by selection).  corr_test: its correlation on the test units, NaN where either
        feature is constant there (never fires on the test split): such pairs are kept, not dropped.
    n_train, n_test: units on each side.  solver, gap: from the assignment (``matching.assign``).
    """

    feature_a: np.ndarray
    feature_b: np.ndarray
    corr_train: np.ndarray
    corr_test: np.ndarray
    n_train: int
    n_test: int
    solver: str = ""
    gap: float = 0.0

    def frame(self) -> pd.DataFrame:
        """One row per pair; the held-out column is named so that it says what it is."""
        return pd.DataFrame({"feature_a": self.feature_a, "feature_b": self.feature_b,
                             "corr_train": self.corr_train, "corr_heldout": self.corr_test})

    def per_feature(self, side: str, n_features: int) -> np.ndarray:
        """``[n_features]`` held-out correlation of each feature of side 'a' or 'b' with its partner (NaN: unpaired)."""
        if side not in ("a", "b"):
            raise SaematchError(f"side must be 'a' or 'b', got {side!r}")
        idx = self.feature_a if side == "a" else self.feature_b
        if len(idx) and idx.max() >= n_features:
            raise SaematchError(f"feature {int(idx.max())} is out of range for {n_features} features")
        out = np.full(n_features, np.nan)
        out[idx] = self.corr_test
        return out

    def save(self, out: Path) -> list[Path]:
        """Write ``heldout.parquet`` and ``heldout.json`` atomically under ``out``; returns the paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        pq = out / HELDOUT_FILE
        with atomic_path(pq) as tmp:
            self.frame().to_parquet(tmp, index=False)
        info = {"n_train": self.n_train, "n_test": self.n_test, "solver": self.solver, "gap": self.gap,
                "n_pairs": int(len(self.feature_a)), "mean_corr_train": _nanmean(self.corr_train),
                "mean_corr_heldout": _nanmean(self.corr_test)}
        write_json(out / INFO_FILE, info)
        return [pq, out / INFO_FILE]

    @classmethod
    def load(cls, out: Path) -> "HeldOut":
        out = Path(out)
        info = read_json(out / INFO_FILE)
        try:
            df = pd.read_parquet(out / HELDOUT_FILE)
        except Exception as exc:
            raise ArtifactError(f"missing or corrupt held-out pairs {out / HELDOUT_FILE}: {exc}") from None
        return cls(df["feature_a"].to_numpy(np.int64), df["feature_b"].to_numpy(np.int64),
                   df["corr_train"].to_numpy(np.float64), df["corr_heldout"].to_numpy(np.float64),
                   int(info["n_train"]), int(info["n_test"]), str(info["solver"]), float(info["gap"]))


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def heldout_match(XA: sp.csr_matrix, XB: sp.csr_matrix, train_mask: np.ndarray, match_cfg: Any,
                  drop_a: np.ndarray | None = None, drop_b: np.ndarray | None = None) -> HeldOut:
    """Pair A's and B's features on the train units (``matching.stage.assign``), score them on the rest.

    XA, XB: CSR feature activations ``[N, F_A]``, ``[N, F_B]`` on the same units.
    train_mask: ``[N]`` bool from :func:`split_units`.  match_cfg: the matching config
    (method, dense_limit, candidates_k).  drop_a/drop_b: ``[F]`` bool masks of features
    excluded from pairing (dead, or dense with ``drop_dense``).
    """
    from saematch.matching.stage import _exclude, assign  # the matching stage pulls in the config module

    XA, XB = sp.csr_matrix(XA), sp.csr_matrix(XB)
    mask = np.asarray(train_mask, bool)
    if XA.shape[0] != XB.shape[0] or mask.shape != (XA.shape[0],):
        raise SaematchError(f"held-out matching needs one train flag per unit and the same units on both sides "
                            f"(A {XA.shape[0]}, B {XB.shape[0]}, mask {mask.shape[0] if mask.ndim else 0})")
    n_train, n_test = int(mask.sum()), int((~mask).sum())
    if n_train < 2 or n_test < 2:
        raise SaematchError(f"held-out matching needs at least 2 train and 2 test units, got {n_train} and {n_test}")
    res = assign(_exclude(XA[mask], drop_a), _exclude(XB[mask], drop_b), match_cfg)
    order = np.argsort(-res.values, kind="stable")
    ra, cb = res.rows[order].astype(np.int64), res.cols[order].astype(np.int64)
    test = pair_correlations(XA[~mask], XB[~mask], ra, cb)
    log.info("held-out matching: %d pairs, mean corr train %.3f, held-out %.3f (%d NaN)", len(ra),
             _nanmean(res.values), _nanmean(test), int(np.isnan(test).sum()))
    return HeldOut(ra, cb, res.values[order].astype(np.float64), test, n_train, n_test, res.solver, float(res.gap))


def run_heldout(XA: sp.csr_matrix, XB: sp.csr_matrix, train_mask: np.ndarray, match_cfg: Any, out: Path,
                drop_a: np.ndarray | None = None, drop_b: np.ndarray | None = None) -> HeldOut:
    """One graph node (a cross-model pair, a seed twin or a floor control): match held-out, write under ``out``."""
    held = heldout_match(XA, XB, train_mask, match_cfg, drop_a, drop_b)
    held.save(out)
    return held
