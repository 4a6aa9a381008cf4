"""Agreement between a crosscoder's shared latents and post-hoc matching of two separate SAEs.

For each crosscoder-shared latent j: its best-correlated feature ``feature_a``
in SAE A and ``feature_b`` in SAE B (Pearson over the same units, from the
matching stage's sparse correlation kernel), and whether those two are a pair
of the Hungarian assignment.  Overlap of the top units (Jaccard of the top
``n_top`` activating units) is reported for latent vs feature_a, latent vs
feature_b, feature_a vs feature_b, and feature_a vs its Hungarian partner.
If the two views agree, a shared latent's best features are each other's
Hungarian pair and fire on the same units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from saematch.artifacts import atomic_path, write_json
from saematch.crosscoder.data import SourceLike, aligned_take, as_sources
from saematch.crosscoder.model import Crosscoder
from saematch.errors import SaematchError
from saematch.features import FeatureStats, top_units

AGREEMENT = "agreement.parquet"
AGREEMENT_SUMMARY = "agreement.json"


@dataclass(frozen=True)
class Agreement:
    """One row per shared latent (columns in :func:`agreement_table`) and a summary."""

    table: pd.DataFrame
    summary: dict
    files: tuple[Path, ...]


@torch.no_grad()
def latent_activations(cc: Crosscoder, inputs: Sequence[SourceLike], start: int = 0, stop: Optional[int] = None,
                       batch: int = 2048, rows: Optional[np.ndarray] = None) -> sp.csr_matrix:
    """CSR ``[units, F]`` of the crosscoder's inference code on the sorted units ``rows`` (default
    ``[start, stop)``): every positive activation, no cap (the inference threshold bounds nothing per unit)."""
    sources = as_sources(inputs)
    stop = sources[0].n_rows if stop is None else min(stop, sources[0].n_rows)
    rows = np.arange(start, stop, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    indptr, indices, values, total = [np.zeros(1, np.int64)], [], [], 0
    for xs in aligned_take(sources, rows, batch):
        f = cc.encode(xs)
        r, idx = torch.nonzero(f > 0, as_tuple=True)
        counts = (f > 0).sum(1).numpy()
        indices.append(idx.numpy().astype(np.int32))
        values.append(f[r, idx].numpy().astype(np.float32))
        indptr.append(total + np.cumsum(counts))
        total += int(counts.sum())
    if not values:
        return sp.csr_matrix((len(rows), cc.d_latent), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(values), np.concatenate(indices), np.concatenate(indptr)),
                         shape=(len(rows), cc.d_latent))


def best_match(Z: sp.csr_matrix, X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """For each column of ``Z``, the best-correlated column of ``X`` and the correlation (-1 / NaN: none)."""
    from saematch.matching.correlation import check_pair, corr_blocks  # numba kernels: import on use

    st = check_pair(Z, X)
    best = np.full(Z.shape[1], -1, np.int64)
    corr = np.full(Z.shape[1], np.nan)
    for lo, C in corr_blocks(Z, X, st):
        ok = ~np.isnan(C).all(1)
        if ok.any():
            rows = np.nonzero(ok)[0]
            j = np.nanargmax(C[rows], axis=1)
            best[lo + rows], corr[lo + rows] = j, C[rows, j]
    return best, corr


def _pair_corr(XA: sp.csr_matrix, fa: np.ndarray, XB: sp.csr_matrix, fb: np.ndarray) -> np.ndarray:
    """Pearson correlation of columns ``XA[:, fa[i]]`` and ``XB[:, fb[i]]``, elementwise over i."""
    A, B = XA.tocsc()[:, fa], XB.tocsc()[:, fb]
    sa, sb = FeatureStats.of(A.tocsr()), FeatureStats.of(B.tocsr())
    cross = np.asarray(A.multiply(B).sum(0)).ravel() / XA.shape[0]
    den = sa.std * sb.std
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (cross - sa.mean * sb.mean) / den, np.nan)


def _jaccard(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard of two ``[n, n_top]`` unit-index arrays (-1 = padding)."""
    out = np.full(len(U), np.nan)
    for i, (u, v) in enumerate(zip(U, V)):
        su, sv = set(u[u >= 0].tolist()), set(v[v >= 0].tolist())
        if su or sv:
            out[i] = len(su & sv) / len(su | sv)
    return out


def _top(X: sp.csr_matrix, cols: np.ndarray, n: int) -> np.ndarray:
    """Top-``n`` units of columns ``cols`` (-1 rows for col -1)."""
    safe = np.where(cols >= 0, cols, 0)
    units = top_units(X.tocsc()[:, safe].tocsr(), n)[0]
    units[cols < 0] = -1
    return units


def agreement_table(Z: sp.csr_matrix, XA: sp.csr_matrix, XB: sp.csr_matrix, pairs: pd.DataFrame,
                    latents: Sequence[int], n_top: int = 20) -> tuple[pd.DataFrame, dict]:
    """Crosscoder latents ``latents`` (columns of ``Z``) against SAE features ``XA``/``XB`` and their pairs.

    ``Z``, ``XA`` and ``XB`` are CSR activations over the same units;
    ``pairs`` has the matching stage's columns ``feature_a``, ``feature_b``,
    ``correlation``.  Columns: latent, feature_a, corr_a, feature_b, corr_b,
    corr_ab (feature_a vs feature_b), hungarian_b (feature_a's Hungarian
    partner, -1 if none), hungarian_corr, is_hungarian_pair, jaccard_latent_a,
    jaccard_latent_b, jaccard_ab, jaccard_pair (feature_a vs hungarian_b).
    """
    if not (Z.shape[0] == XA.shape[0] == XB.shape[0]):
        raise SaematchError(f"activations cover different units: {Z.shape[0]}, {XA.shape[0]}, {XB.shape[0]}")
    missing = {"feature_a", "feature_b", "correlation"} - set(pairs.columns)
    if missing:
        raise SaematchError(f"pairs table lacks columns {sorted(missing)}")
    lat = np.asarray(latents, np.int64)
    Zs = Z.tocsc()[:, lat].tocsr()
    fa, ca = best_match(Zs, XA)
    fb, cb = best_match(Zs, XB)
    partner = dict(zip(pairs["feature_a"].astype(np.int64), pairs["feature_b"].astype(np.int64)))
    pcorr = dict(zip(pairs["feature_a"].astype(np.int64), pairs["correlation"].astype(float)))
    hb = np.array([partner.get(int(a), -1) if a >= 0 else -1 for a in fa], np.int64)
    both = (fa >= 0) & (fb >= 0)
    cab = np.full(len(lat), np.nan)
    if both.any():
        cab[both] = _pair_corr(XA, fa[both], XB, fb[both])
    tz, ta, tb, th = _top(Zs, np.arange(len(lat)), n_top), _top(XA, fa, n_top), _top(XB, fb, n_top), _top(XB, hb, n_top)
    df = pd.DataFrame({
        "latent": lat, "feature_a": fa, "corr_a": ca, "feature_b": fb, "corr_b": cb, "corr_ab": cab,
        "hungarian_b": hb, "hungarian_corr": [pcorr.get(int(a), np.nan) for a in fa],
        "is_hungarian_pair": both & (hb == fb),
        "jaccard_latent_a": _jaccard(tz, ta), "jaccard_latent_b": _jaccard(tz, tb),
        "jaccard_ab": _jaccard(ta, tb), "jaccard_pair": _jaccard(ta, th),
    })
    med = lambda c: float(df[c].median()) if df[c].notna().any() else float("nan")  # noqa: E731
    summary = {"n_latents": len(df), "n_matched_both": int(both.sum()),
               "hungarian_pair_fraction": float(df["is_hungarian_pair"].mean()) if len(df) else float("nan"),
               **{f"median_{c}": med(c) for c in ("corr_a", "corr_b", "corr_ab", "jaccard_latent_a",
                                                  "jaccard_latent_b", "jaccard_ab", "jaccard_pair")}}
    return df, summary


def run_agreement(Z: sp.csr_matrix, XA: sp.csr_matrix, XB: sp.csr_matrix, pairs: pd.DataFrame,
                  latent_table: pd.DataFrame, n_top: int = 20, out: Optional[Path] = None) -> Agreement:
    """The agreement table for the latents classed ``shared`` in ``latent_table``; written under ``out``."""
    shared = latent_table.loc[latent_table["class"] == "shared", "latent"].to_numpy()
    df, summary = agreement_table(Z, XA, XB, pairs, shared, n_top)
    files: tuple[Path, ...] = ()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / AGREEMENT) as tmp:
            df.to_parquet(tmp, index=False)
        write_json(out / AGREEMENT_SUMMARY, summary)
        files = (out / AGREEMENT, out / AGREEMENT_SUMMARY)
    return Agreement(df, summary, files)
