"""Per-document sufficient statistics of matched feature pairs.

A pair's Pearson correlation over any weighted set of documents follows from six sums per
document: units n, Σa, Σb, Σa², Σb², Σab.  With them a document-bootstrap replicate of a
pair's held-out correlation (or of the mean over all pairs) costs O(pairs × documents),
never a pass over units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from saematch.errors import SaematchError


@dataclass(frozen=True)
class PairDocStats:
    """Sums per document (rows) and pair (columns).

    n_D: units per document; sa_DP, sb_DP: Σa and Σb; saa_DP, sbb_DP: Σa², Σb²; sab_DP: Σab.
    """

    n_D: np.ndarray
    sa_DP: np.ndarray
    sb_DP: np.ndarray
    saa_DP: np.ndarray
    sbb_DP: np.ndarray
    sab_DP: np.ndarray

    @property
    def n_docs(self) -> int:
        return len(self.n_D)

    @property
    def n_pairs(self) -> int:
        return self.sa_DP.shape[1]

    def corr(self, w_BD: np.ndarray) -> np.ndarray:
        """Each pair's correlation ``[B, P]`` over the documents weighted by ``w_BD`` (a replicate's document
        multiplicities; ones give the plain held-out correlation).  NaN where a side is constant."""
        w = np.atleast_2d(np.asarray(w_BD, np.float64))
        n = (w @ self.n_D)[:, None]
        sa, sb = w @ self.sa_DP, w @ self.sb_DP
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = w @ self.sab_DP - sa * sb / n
            va = w @ self.saa_DP - sa * sa / n
            vb = w @ self.sbb_DP - sb * sb / n
            tol = 1e-9
            ok = (va > tol * (w @ self.saa_DP)) & (vb > tol * (w @ self.sbb_DP))
            r = np.where(ok, cov / np.sqrt(np.where(ok, va * vb, 1.0)), np.nan)
        return np.clip(r, -1.0, 1.0)

    def mean_corr(self, w_BD: np.ndarray) -> np.ndarray:
        """Mean correlation over pairs ``[B]`` (NaN pairs ignored; NaN when none is defined)."""
        r = self.corr(w_BD)
        cnt = np.isfinite(r).sum(1)
        with np.errstate(invalid="ignore"):
            return np.where(cnt > 0, np.nansum(r, 1) / np.maximum(cnt, 1), np.nan)


def pair_doc_stats(XA: sp.spmatrix, XB: sp.spmatrix, rows: np.ndarray, cols: np.ndarray,
                   group_U: np.ndarray) -> PairDocStats:
    """Sums of column ``rows[i]`` of XA and ``cols[i]`` of XB over the units of each document.

    XA ``[U, F_A]``, XB ``[U, F_B]``: sparse activations of the same units; group_U: each unit's document as a
    dense index 0..D-1.  Sparse products only: no dense units × features matrix.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    g = np.asarray(group_U, np.int64)
    if XA.shape[0] != XB.shape[0] or len(g) != XA.shape[0]:
        raise SaematchError(f"per-document statistics need the same units on both sides and one document per unit "
                            f"(A {XA.shape[0]}, B {XB.shape[0]}, documents {len(g)})")
    if len(rows) != len(cols):
        raise SaematchError(f"per-document statistics need as many A features as B features ({len(rows)} vs {len(cols)})")
    D = int(g.max()) + 1 if len(g) else 0
    ind = sp.csr_matrix((np.ones(len(g)), (g, np.arange(len(g)))), shape=(D, len(g)))
    A = sp.csc_matrix(XA, dtype=np.float64)[:, rows]
    B = sp.csc_matrix(XB, dtype=np.float64)[:, cols]
    dense = lambda M: np.asarray((ind @ M).todense(), np.float64)  # noqa: E731
    return PairDocStats(np.bincount(g, minlength=D).astype(np.float64), dense(A), dense(B),
                        dense(A.multiply(A)), dense(B.multiply(B)), dense(A.multiply(B)))
