"""The intervals the calibrate stage reports, checked by simulation: coverage of a known truth on data whose
units are correlated within documents.  Document resampling must cover at about its nominal rate; resampling
units one at a time (what treating units as independent does) must not."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from saematch.calibration.resample import doc_bootstrap, half_sample
from saematch.matching.docstats import pair_doc_stats

N_SETS, N_DOCS, PER_DOC, N_PAIRS = 200, 90, 6, 12  # 90 test documents, as in the demo
RHO_DOC, RHO_UNIT, VAR_DOC = 0.8, 0.1, 1.0


def _pairs_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature pairs whose values share a document effect (the same for every pair: what one speech's topic does
    to all features at once) on top of unit noise.  Pooled correlation of every pair, in the population:
    (ρ_doc σ² + ρ_unit) / (σ² + 1)."""
    doc = np.repeat(np.arange(N_DOCS), PER_DOC)
    n = len(doc)
    cov_doc = VAR_DOC * np.array([[1, RHO_DOC], [RHO_DOC, 1]])
    d = rng.multivariate_normal([0, 0], cov_doc, N_DOCS)[doc]  # shared by all pairs
    e = rng.multivariate_normal([0, 0], [[1, RHO_UNIT], [RHO_UNIT, 1]], (n, N_PAIRS))
    return doc, d[:, None, 0] + e[..., 0], d[:, None, 1] + e[..., 1]


TRUTH = (RHO_DOC * VAR_DOC + RHO_UNIT) / (VAR_DOC + 1)


def _coverage(by_unit: bool) -> float:
    rng = np.random.default_rng(7)
    hits = 0
    for s in range(N_SETS):
        doc, A, B = _pairs_data(rng)
        group = np.arange(len(doc)) if by_unit else doc
        st = pair_doc_stats(sp.csr_matrix(A), sp.csr_matrix(B), np.arange(N_PAIRS), np.arange(N_PAIRS), group)
        iv = doc_bootstrap(lambda w: st.mean_corr(w)[None, :], st.n_docs, 200, s)[0]
        hits += iv.ci_low <= TRUTH <= iv.ci_high
    return hits / N_SETS


def test_document_bootstrap_of_matched_correlation_covers_and_unit_resampling_does_not():
    doc_cov, unit_cov = _coverage(False), _coverage(True)
    assert 0.90 <= doc_cov <= 0.99, doc_cov
    assert unit_cov < 0.80, unit_cov


def _cka(X: np.ndarray, Y: np.ndarray) -> float:
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return float(np.linalg.norm(X.T @ Y) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def _raw_coverage(by_unit: bool, n_sets: int = N_SETS) -> float:
    """Linear CKA between two 3-d views of document-level and unit-level latents; the population value follows from
    the covariances: ||Σxy||² / (||Σxx|| ||Σyy||)."""
    rng = np.random.default_rng(11)
    k, docs, per = 3, 40, 15
    Wx, Wy = rng.normal(size=(2 * k, k)), rng.normal(size=(2 * k, k))
    Wx[k:] *= 0.3  # both read the document latents fully and the unit latents weakly
    Wy[k:] *= 0.3
    S = np.diag([1.0] * k + [1.0] * k)  # document latents (first k) and unit latents, unit variance each
    sxx, syy, sxy = Wx.T @ S @ Wx + np.eye(k), Wy.T @ S @ Wy + np.eye(k), Wx.T @ S @ Wy
    truth = np.linalg.norm(sxy) ** 2 / (np.linalg.norm(sxx) * np.linalg.norm(syy))
    hits = 0
    for s in range(n_sets):
        doc = np.repeat(np.arange(docs), per)
        lat = np.hstack([rng.normal(size=(docs, k))[doc], rng.normal(size=(len(doc), k))])
        X = lat @ Wx + rng.normal(size=(len(doc), k))
        Y = lat @ Wy + rng.normal(size=(len(doc), k))
        group = np.arange(len(doc)) if by_unit else doc
        ng = int(group.max()) + 1
        iv = half_sample(lambda keep: np.array([_cka(X[keep[group]], Y[keep[group]])]), ng, 200, s)[0]
        hits += iv.ci_low <= truth <= iv.ci_high
    return hits / n_sets


def test_document_half_samples_of_cka_cover_and_unit_half_samples_do_not():
    doc_cov, unit_cov = _raw_coverage(False), _raw_coverage(True, 100)
    assert 0.90 <= doc_cov <= 0.99, doc_cov
    assert unit_cov < 0.80, unit_cov
