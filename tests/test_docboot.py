"""Document resampling: per-document sums reproduce the statistic on repeated documents, undefined replicates
are counted, and half-sampling of documents has the variance of the full-sample estimate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saematch.calibration.resample import doc_bootstrap, half_sample
from saematch.matching.docstats import pair_doc_stats


def _units(rng: np.random.Generator, n_docs: int = 12, n_pairs: int = 5):
    doc = np.repeat(np.arange(n_docs), rng.integers(2, 6, n_docs))
    shift = rng.normal(size=(n_docs, 1))[doc]
    A = np.abs(shift + rng.normal(size=(len(doc), n_pairs)))
    B = np.abs(0.7 * A + shift + rng.normal(size=(len(doc), n_pairs)))
    return doc, A, B


def test_document_sums_give_each_pairs_correlation_on_repeated_documents():
    rng = np.random.default_rng(0)
    doc, A, B = _units(rng)
    st = pair_doc_stats(sp.csr_matrix(A), sp.csr_matrix(B), np.arange(5), np.arange(5), doc)
    w = rng.integers(0, 3, st.n_docs).astype(float)  # a bootstrap replicate: document multiplicities
    rows = np.repeat(np.arange(len(doc)), w[doc].astype(int))  # each document's units repeated w_d times
    want = [np.corrcoef(A[rows, p], B[rows, p])[0, 1] for p in range(5)]
    np.testing.assert_allclose(st.corr(w[None])[0], want, atol=1e-10)
    full = [np.corrcoef(A[:, p], B[:, p])[0, 1] for p in range(5)]
    np.testing.assert_allclose(st.corr(np.ones((1, st.n_docs)))[0], full, atol=1e-10)
    assert st.mean_corr(w[None])[0] == pytest.approx(np.mean(want))


def test_undefined_replicates_are_counted_and_the_interval_says_percentile():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)

    def stat(w):  # undefined whenever document 0 is not drawn
        return np.where(w[:, 0] > 0, (w @ x) / w.sum(1), np.nan)[None, :]

    iv = doc_bootstrap(stat, 30, 400, seed=0)[0]
    assert iv.value == pytest.approx(x.mean())
    expected_missing = 400 * (1 - 1 / 30) ** 30  # P(document 0 not drawn) ≈ e^-1
    assert 0.7 * expected_missing < iv.n_undefined < 1.3 * expected_missing
    assert iv.method == "percentile" and iv.ci_low < iv.ci_high and iv.n_boot == 400


def test_bca_interval_is_not_recentred_on_the_value():
    """A skewed statistic: the BCa interval is asymmetric about the value, as a recentred one would not be."""
    x = np.random.default_rng(2).lognormal(sigma=1.2, size=40)
    iv = doc_bootstrap(lambda w: ((w @ x) / w.sum(1))[None, :], 40, 2000, seed=0)[0]
    assert iv.method == "bca"
    assert iv.ci_high - iv.value > 1.3 * (iv.value - iv.ci_low)


def test_half_samples_of_documents_have_the_full_sample_variance_of_a_mean():
    rng = np.random.default_rng(3)
    D, sd = 60, 2.0
    x = rng.normal(0, sd, D)
    iv = half_sample(lambda keep: np.array([x[keep].mean()]), D, 800, seed=0)[0]
    # a half without replacement has variance (σ²/(D/2))·(D/2)/(D−1) = σ²/(D−1): the SE of the full-sample mean
    assert iv.se == pytest.approx(x.std(ddof=1) / np.sqrt(D), rel=0.12)
