import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from saematch.matching.assign import hungarian_dense, hungarian_sparse, match_max, match_mutual
from saematch.matching.correlation import corr_blocks, dense_corr, topk_candidates
from saematch.matching.methods.hungarian import HungarianConfig


def topk_acts(N, F, k, rng):
    """TopK-like sparse activations: k random features per unit, exponential values."""
    idx = np.argsort(rng.random((N, F)), axis=1)[:, :k]
    vals = rng.exponential(1.0, (N, k)).astype(np.float32)
    return sp.csr_matrix((vals.ravel(), idx.ravel(), np.arange(0, N * k + 1, k)), shape=(N, F))


def planted(N=6000, F=400, k=8, noise=0.5, seed=0):
    """B's features are a permuted, noisy copy of A's, plus extra random firing."""
    rng = np.random.default_rng(seed)
    XA = topk_acts(N, F, k, rng)
    perm = rng.permutation(F)  # A feature i is B feature perm[i]
    XB = sp.csr_matrix((F, F))
    XB = XA @ sp.csr_matrix((np.ones(F), (np.arange(F), perm)), shape=(F, F))
    XB = XB.tocsr()
    XB.data = (XB.data * np.clip(1 + noise * rng.standard_normal(XB.nnz), 0.05, None)).astype(np.float32)
    return XA, (XB + topk_acts(N, F, 2, rng)).tocsr(), perm


def test_correlation_equals_corrcoef_with_constant_columns():
    rng = np.random.default_rng(1)
    XA = topk_acts(300, 12, 3, rng).toarray()
    XB = topk_acts(300, 9, 2, rng).toarray()
    XA[:, 4] = 0.0  # never fires
    XB[:, 7] = 0.0
    C, st = dense_corr(sp.csr_matrix(XA), sp.csr_matrix(XB))
    with warnings.catch_warnings():  # numpy warns on the constant columns we planted
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.corrcoef(XA.T, XB.T)[:12, 12:]
    ok = np.ones_like(ref, bool)
    ok[4], ok[:, 7] = False, False
    np.testing.assert_allclose(C[ok], ref[ok], rtol=1e-4, atol=1e-6)
    assert np.isnan(C[4]).all() and np.isnan(C[:, 7]).all()
    assert st.a.dead.sum() == 1 and st.b.dead.sum() == 1


def test_planted_permutation_dense_and_sparse():
    XA, XB, perm = planted()
    C, st = dense_corr(XA, XB)
    d = hungarian_dense(C)
    assert len(d.rows) == 400
    np.testing.assert_array_equal(d.cols[np.argsort(d.rows)], perm)
    G = topk_candidates(XA, XB, st, 8)
    s = hungarian_sparse(G, lambda: corr_blocks(XA, XB, st), 8)
    assert s.gap == 0.0
    np.testing.assert_array_equal(s.cols[np.argsort(s.rows)], perm)
    assert s.objective == pytest.approx(d.objective, rel=1e-6)


def test_sparse_widens_candidates_until_certified():
    # dense random correlations: top-1 candidates are not enough for the optimum
    rng = np.random.default_rng(3)
    XA, XB = topk_acts(3000, 60, 10, rng), topk_acts(3000, 50, 10, rng)
    XB = (XB + XA[:, :50] * 0.3).tocsr()
    C, st = dense_corr(XA, XB)
    d = hungarian_dense(C)
    s = hungarian_sparse(topk_candidates(XA, XB, st, 1), lambda: corr_blocks(XA, XB, st), 1, max_rounds=10)
    assert s.rounds > 1 and s.gap == 0.0
    assert s.objective == pytest.approx(d.objective, rel=1e-6)
    # without a certificate the gap is unknown, never claimed to be zero
    assert np.isnan(hungarian_sparse(topk_candidates(XA, XB, st, 1)).gap)


def test_unequal_feature_counts():
    XA, XB, perm = planted(F=300)
    XB = XB[:, :200].tocsr()  # B has fewer features
    C, _ = dense_corr(XA, XB)
    d = hungarian_dense(C)
    assert len(d.rows) == 200 and len(set(d.rows)) == 200
    inv = {b: a for a, b in enumerate(perm)}
    assert all(inv[b] == a for a, b in zip(d.rows, d.cols))


def test_max_and_mutual_on_hand_made_matrix():
    C = np.array([[0.9, 0.8, 0.1],
                  [0.2, 0.7, -0.3],
                  [0.1, 0.6, -0.2]])
    m = match_max(C)  # each B feature (column) to its best A feature
    assert dict(zip(m.cols.tolist(), m.rows.tolist())) == {0: 0, 1: 0, 2: 0}
    mu = match_mutual(C)
    assert list(zip(mu.rows.tolist(), mu.cols.tolist())) == [(0, 0)]
    C2 = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]])
    assert sorted(zip(match_mutual(C2).rows.tolist(), match_mutual(C2).cols.tolist())) == [(0, 0), (1, 1)]
    h = hungarian_dense(C)  # one-to-one; A2 has no positive partner left, so it stays unmatched
    assert sorted(zip(h.rows.tolist(), h.cols.tolist())) == [(0, 0), (1, 1)]
    assert h.objective == pytest.approx(1.6)


def test_match_pair_flags(tmp_path):
    from saematch.matching.stage import match_pair

    XA, XB, perm = planted(F=50, N=3000)
    cards = lambda m, F: pd.DataFrame({"model": m, "layer": 1, "feature": np.arange(F), "dead": False,
                                       "dense": np.arange(F) == 0, "top_words": [["."] if f < 5 else ["word"] for f in range(F)]})
    df, info = match_pair(XA, XB, cards("a", 50), cards("b", 50), HungarianConfig(min_corr=0.5, token_filter=True))
    assert info.n_pairs == 50 and info.solver == "dense-lsa"
    assert (df["rank"].to_numpy() == np.arange(1, 51)).all() and df["correlation"].is_monotonic_decreasing
    assert (df["keep"] == ~(df["below_min_corr"] | df["punctuation"])).all()
    df2, info2 = match_pair(XA, XB, cards("a", 50), cards("b", 50), HungarianConfig(drop_dense=True, dense_limit=10))
    assert info2.excluded_a == 1 and info2.solver == "sparse-ssp" and info2.gap == 0 and 0 not in df2["feature_a"].tolist()


def test_duals_are_feasible_and_tight():
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    from saematch.matching.duals import duals

    rng = np.random.default_rng(5)
    n = 60
    M = sp.random(n, n, density=0.2, random_state=7, format="csr")
    cost = (M + sp.eye(n)).tocsr()  # the diagonal keeps a perfect matching possible
    cost.data = 1.0 + rng.random(cost.nnz)
    rows, cols = min_weight_full_bipartite_matching(cost)
    match_col = np.empty(n, np.int64)
    match_col[rows] = cols
    u, v = duals(cost, match_col)
    coo = cost.tocoo()
    assert (u[coo.row] + v[coo.col] <= coo.data + 1e-9).all()
    np.testing.assert_allclose(u + v[match_col], np.asarray(cost[np.arange(n), match_col]).ravel(), atol=1e-9)
    # duality: the matching's cost equals the dual objective, so it is optimal
    assert (u.sum() + v.sum()) == pytest.approx(cost[np.arange(n), match_col].sum())


def test_topk_candidates_are_row_and_column_top_k():
    rng = np.random.default_rng(9)
    XA, XB = topk_acts(2000, 70, 6, rng), topk_acts(2000, 50, 6, rng)
    XB = (XB + XA[:, :50] * 0.5).tocsr()
    C, st = dense_corr(XA, XB)
    k = 3
    G = topk_candidates(XA, XB, st, k).toarray()
    W = np.where(np.nan_to_num(C) > 0, np.nan_to_num(C), 0)
    want = np.zeros(W.shape, bool)
    for i in range(W.shape[0]):
        want[i, np.argsort(-W[i])[:k]] = True
    for j in range(W.shape[1]):
        want[np.argsort(-W[:, j])[:k], j] = True
    want &= W > 0
    np.testing.assert_array_equal(G > 0, want)
    np.testing.assert_allclose(G[want], W[want], rtol=1e-6)
