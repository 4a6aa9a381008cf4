"""The layer-pair grid: planted truth recovered and certified, equal to the per-pair path, whatever the workers."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from saematch.errors import SaematchError
from saematch.matching.assign import _augmented, hungarian_dense, hungarian_sparse
from saematch.matching.correlation import check_pair, corr_blocks, corr_rows, dense_corr, top_lists, topk_candidates
from saematch.matching.duals import bound_violations, violations
from saematch.matching.grid import _RowCache, match_grid
from saematch.matching.ssp import solve


def topk_acts(N, F, k, rng):
    idx = np.argsort(rng.random((N, F)), axis=1)[:, :k]
    vals = rng.exponential(1.0, (N, k)).astype(np.float32)
    return sp.csr_matrix((vals.ravel(), idx.ravel(), np.arange(0, N * k + 1, k)), shape=(N, F))


def planted_grid(n_a=3, n_b=2, N=3000, F=200, k=8, seed=0):
    """Every layer is a permuted, noisy copy of one base layer, plus random firing.

    Feature i of A layer a is base feature pa[a][i], so it is B layer b's feature inv(pb[b])[pa[a][i]].
    """
    rng = np.random.default_rng(seed)
    base = topk_acts(N, F, k, rng)

    def layer(s):
        r = np.random.default_rng([seed, s])
        perm = r.permutation(F)
        X = base[:, perm].tocsr()
        X.data *= np.clip(1 + 0.5 * r.standard_normal(X.nnz), 0.05, None).astype(np.float32)
        return (X + topk_acts(N, F, 2, r)).tocsr(), perm

    A = {a: layer(a) for a in range(n_a)}
    B = {b: layer(100 + b) for b in range(n_b)}
    truth = {}
    for a, (_, pa) in A.items():
        for b, (_, pb) in B.items():
            inv_b = np.argsort(pb)
            truth[a, b] = inv_b[pa]
    return {a: X for a, (X, _) in A.items()}, {b: X for b, (X, _) in B.items()}, truth


@pytest.fixture(scope="module")
def grid():
    return planted_grid()


def per_pair(XA, XB, k=8):
    st = check_pair(XA, XB)
    return hungarian_sparse(topk_candidates(XA, XB, st, k), lambda: corr_blocks(XA, XB, st), k)


def test_grid_recovers_planted_permutations_certified(grid):
    XAs, XBs, truth = grid
    res = match_grid(XAs, XBs, k=2, k_max=8)
    assert list(res.assignments) == [(a, b) for a in XAs for b in XBs]
    assert len(res.log) == 6 and res.max_gap == 0.0
    for (a, b), asg in res.assignments.items():
        assert asg.gap == 0.0 and asg.solver == "sparse-ssp"
        np.testing.assert_array_equal(asg.cols[np.argsort(asg.rows)], truth[a, b])
        ref = per_pair(XAs[a], XBs[b])
        assert ref.gap == 0.0
        np.testing.assert_array_equal(asg.rows, ref.rows)
        np.testing.assert_array_equal(asg.cols, ref.cols)
        np.testing.assert_allclose(asg.values, ref.values)


def test_grid_workers_do_not_change_the_result(grid):
    XAs, XBs, _ = grid
    one = match_grid(XAs, XBs, workers=1, k=2, k_max=8)
    two = match_grid(XAs, XBs, workers=2, k=2, k_max=8)
    assert list(one.assignments) == list(two.assignments)
    assert [(g.layer_a, g.layer_b) for g in two.log] == list(two.assignments)
    for key, a in one.assignments.items():
        b = two[key]
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.cols, b.cols)
        np.testing.assert_array_equal(a.values, b.values)
        assert a.gap == b.gap == 0.0


def test_grid_on_hard_pairs_needs_rounds_and_still_certifies():
    # unrelated layers: top-1 candidates are not enough, the certificate adds what the duals reject
    rng = np.random.default_rng(3)
    XA, XB = topk_acts(3000, 60, 10, rng), topk_acts(3000, 50, 10, rng)
    XB = (XB + XA[:, :50] * 0.3).tocsr()
    d = hungarian_dense(dense_corr(XA, XB)[0])
    res = match_grid({0: XA}, {0: XB}, k=1, k_max=2)
    asg = res[0, 0]
    assert asg.gap == 0.0 and res.log[0].rounds > 1
    assert asg.objective == pytest.approx(d.objective, rel=1e-6)


def test_grid_units_and_exclusions_equal_the_per_pair_path(grid):
    from saematch.matching.stage import _exclude

    XAs, XBs, _ = grid
    units = np.arange(XAs[0].shape[0]) % 3 != 0
    drop = np.zeros(200, bool)
    drop[:7] = True
    res = match_grid({0: XAs[0]}, {1: XBs[1]}, units=units, exclude_a={0: drop}, k=2, k_max=8)
    ref = per_pair(_exclude(XAs[0][units], drop), XBs[1][units])
    np.testing.assert_array_equal(res[0, 1].cols, ref.cols)
    np.testing.assert_array_equal(res[0, 1].rows, ref.rows)
    assert not np.isin(np.arange(7), res[0, 1].rows).any()
    with pytest.raises(SaematchError, match="unit mask"):
        match_grid({0: XAs[0]}, {1: XBs[1]}, units=units[:-1])
    with pytest.raises(SaematchError, match="k_max"):
        match_grid({0: XAs[0]}, {1: XBs[1]}, k=9, k_max=8)


def test_bound_covers_every_entry_outside_the_candidates():
    rng = np.random.default_rng(4)
    XA, XB = topk_acts(1500, 40, 6, rng), topk_acts(1500, 30, 6, rng)
    XB = (XB + XA[:, :30] * 0.4).tocsr()
    st = check_pair(XA, XB)
    rows = corr_rows(XA, XB, st)
    top = top_lists(rows, 3)
    C = rows(0, 40)
    outside = np.where(top.graph().toarray() > 0, 0, np.nan_to_num(C, nan=0.0)).astype(np.float32)
    n = 70
    for seed in range(5):  # any duals at all, not only optimal ones
        r = np.random.default_rng(seed)
        u, v = r.uniform(0.5, 1.5, n), r.uniform(0.0, 0.8, n)
        _, _, exact = violations(outside, 0, u, v, 40, 2.0, 0.0)
        bound = bound_violations(u, v, *top.bounds(), 2.0)
        assert (bound >= exact - 1e-12).all()


def test_bounded_certificate_without_rows_bounds_the_gap():
    rng = np.random.default_rng(3)
    XA, XB = topk_acts(3000, 60, 10, rng), topk_acts(3000, 50, 10, rng)
    XB = (XB + XA[:, :50] * 0.3).tocsr()
    d = hungarian_dense(dense_corr(XA, XB)[0])
    top = top_lists(corr_rows(XA, XB, check_pair(XA, XB)), 1)
    s = hungarian_sparse(top.graph(), bounds=top.bounds(), solver="ssp")
    assert s.gap >= d.objective - s.objective - 1e-9 and s.gap > 0


def test_ssp_equals_scipy_cold_and_warm():
    rng = np.random.default_rng(0)
    for n, dens, seed in ((40, 0.2, 0), (300, 0.05, 1), (1000, 0.01, 2)):
        M = (sp.random(n, n, density=dens, random_state=seed, format="csr") + sp.eye(n)).tocsr()
        M.data = 1 + rng.random(M.nnz)
        r, c = min_weight_full_bipartite_matching(M)
        mc, u, v = solve(M)
        assert sorted(mc) == list(range(n))
        assert M[np.arange(n), mc].sum() == pytest.approx(M[r, c].sum(), abs=1e-9)
        coo = M.tocoo()
        assert (u[coo.row] + v[coo.col] <= coo.data + 1e-9).all()
        np.testing.assert_allclose(u + v[mc], np.asarray(M[np.arange(n), mc]).ravel(), atol=1e-9)
        E = sp.random(n, n, density=dens, random_state=seed + 9, format="csr")
        E.data = 0.5 + rng.random(E.nnz)
        M2 = M.maximum(E).tocsr()  # more edges, some cheaper than what was there
        mc2, _, _ = solve(M2, (mc, u, v))
        r2, c2 = min_weight_full_bipartite_matching(M2)
        assert M2[np.arange(n), mc2].sum() == pytest.approx(M2[r2, c2].sum(), abs=1e-9)


def test_ssp_and_lapjvsp_certify_the_same_optimum():
    XAs, XBs, _ = planted_grid(1, 1, F=120, N=2000)
    XA, XB = XAs[0], XBs[0]
    st = check_pair(XA, XB)
    G = topk_candidates(XA, XB, st, 1)
    a = hungarian_sparse(G, lambda: corr_blocks(XA, XB, st), 1, max_rounds=10)
    b = hungarian_sparse(G, lambda: corr_blocks(XA, XB, st), 1, max_rounds=10, solver="ssp")
    assert a.gap == b.gap == 0.0 and b.solver == "sparse-ssp"
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    cost = _augmented(G)
    assert solve(cost) is not None


def test_row_cache_serves_each_row_once():
    XAs, XBs, _ = planted_grid(1, 1, F=50, N=800)
    rows = corr_rows(XAs[0], XBs[0], check_pair(XAs[0], XBs[0]))
    cache = _RowCache(rows)
    want = np.nan_to_num(rows(0, 50), nan=0.0).clip(0, None)
    np.testing.assert_array_equal(cache(np.array([3, 7, 9])), want[[3, 7, 9]])
    np.testing.assert_array_equal(cache(np.array([1, 7, 9])), want[[1, 7, 9]])
    assert cache.computed == 4


def test_one_pass_top_lists_equal_a_dense_sort_for_any_thread_count():
    import numba

    rng = np.random.default_rng(11)
    XA, XB = topk_acts(2500, 90, 6, rng), topk_acts(2500, 70, 6, rng)
    XB = (XB + XA[:, :70] * 0.5).tocsr()
    XB = sp.hstack([XB, XB[:, :5]]).tocsr()  # duplicated columns: exact ties in every row that touches them
    rows = corr_rows(XA, XB, check_pair(XA, XB))
    W = np.nan_to_num(rows(0, 90), nan=0.0).clip(0, None)
    k = 4
    before = numba.get_num_threads()
    try:
        got = []
        for t in sorted({1, before}):
            numba.set_num_threads(t)
            got.append(top_lists(rows, k))
    finally:
        numba.set_num_threads(before)
    for top in got:  # values: the k largest; indices: ties go to the smaller index
        np.testing.assert_array_equal(top.row_v, -np.sort(-W, axis=1)[:, :k].astype(np.float32))
        np.testing.assert_array_equal(top.col_v, -np.sort(-W, axis=0)[:k].T.astype(np.float32))
        order = np.lexsort((np.broadcast_to(np.arange(W.shape[1]), W.shape), -W), axis=1)[:, :k]
        np.testing.assert_array_equal(top.row_i, np.where(np.take_along_axis(W, order, 1) > 0, order, -1))
    for a, b in zip(got, got[1:]):
        np.testing.assert_array_equal(a.row_i, b.row_i)
        np.testing.assert_array_equal(a.col_i, b.col_i)


def test_phased_first_solve_is_optimal_with_feasible_tight_duals():
    from saematch.matching.assign import _cold_ssp

    rng = np.random.default_rng(2)
    for F_A, F_B in ((80, 60), (60, 80)):
        XA, XB = topk_acts(2000, F_A, 8, rng), topk_acts(2000, F_B, 8, rng)
        XB = (XB + XA[:, :F_B] * 0.3 if F_A >= F_B else XB + sp.hstack([XA, XA])[:, :F_B] * 0.3).tocsr()
        G = topk_candidates(XA, XB, check_pair(XA, XB), 3)
        cost = _augmented(G)
        mc, u, v = _cold_ssp(cost, F_A, F_B)
        n = cost.shape[0]
        assert sorted(mc) == list(range(n))
        r, c = min_weight_full_bipartite_matching(cost)
        assert cost[np.arange(n), mc].sum() == pytest.approx(cost[r, c].sum(), abs=1e-9)
        coo = cost.tocoo()
        assert (u[coo.row] + v[coo.col] <= coo.data + 1e-9).all()
        np.testing.assert_allclose(u + v[mc], np.asarray(cost[np.arange(n), mc]).ravel(), atol=1e-9)


def test_feature_stats_equal_feature_stats_of_for_both_layouts():
    from saematch.features.encode import FeatureStats
    from saematch.matching.correlation import feature_stats

    rng = np.random.default_rng(6)
    X = topk_acts(700, 30, 4, rng).tolil()
    X[:, 3] = 0  # never fires
    X[:, 8] = 2.5  # fires everywhere, constant
    X = X.tocsr()
    want = FeatureStats.of(X)
    for M in (X, X.tocsc()):
        got = feature_stats(M)
        assert got.n_units == want.n_units
        np.testing.assert_array_equal(got.count, want.count)
        for f in ("total", "total_sq", "max", "mean", "std"):
            np.testing.assert_allclose(getattr(got, f), getattr(want, f), rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(got.dead, want.dead)
        assert got.dead[3] and got.dead[8]


def test_grid_makes_no_second_pass_on_planted_pairs(grid):
    XAs, XBs, _ = grid
    res = match_grid(XAs, XBs, k=2, k_max=8)
    assert all(g.checked_rows < 200 // 4 for g in res.log)  # the certificate recomputes only a few rows
