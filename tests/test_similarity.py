"""Metric invariants, planted structure, and outside references."""

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group, spearmanr

from saematch.similarity import ProcrustesMap, RidgeMap, get_metric, metric_names, score_with_null
from saematch.similarity.metrics.knn import mknn_chance


def spread(n=400, d=30, seed=0):
    """Data whose variance is spread over many directions."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ np.diag(np.linspace(1.0, 0.3, d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_rotation_scale_shift_invariant(seed):
    X = spread(seed=seed)
    Q = ortho_group.rvs(30, random_state=seed)
    Y = 3.7 * X @ Q + 5.0
    for name in ["cka-linear", "cka-linear-unbiased"]:
        assert get_metric(name).score(X, Y) == pytest.approx(1.0, abs=1e-9)
    assert get_metric("cka-linear-unbiased").score(X, np.random.default_rng(9).standard_normal((400, 20))) == pytest.approx(0, abs=0.05)


def test_svcca_invariant_to_invertible_maps_and_keeps_many_components():
    X, Y = spread(seed=0), spread(seed=1) + 0.5 * spread(seed=0)
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((30, 30)), rng.standard_normal((30, 30))
    full = get_metric("svcca", var=1.0)
    assert full.score(X @ A, Y @ B) == pytest.approx(full.score(X, Y), abs=1e-8)
    # low-rank data: 99% of the variance lives in 8 dims; invariance holds through the reduction too
    Z = rng.standard_normal((400, 8))
    Xl, Yl = Z @ rng.standard_normal((8, 30)), (Z + 0.3 * rng.standard_normal((400, 8))) @ rng.standard_normal((8, 25))
    m = get_metric("svcca")
    s1 = m(Xl, Yl)
    assert (s1.diagnostics["k_x"], s1.diagnostics["k_y"]) == (8, 8)
    assert m.score(Xl @ A, Yl @ B[:25, :25]) == pytest.approx(s1.score, abs=1e-8)
    d = m(X, Y).diagnostics
    assert d["k_x"] > 20 and d["k_y"] > 20  # not the published k=1 bug
    k1 = get_metric("svcca-k1")(X, Y).diagnostics
    assert (k1["k_x"], k1["k_y"]) == (1, 1)
    assert vars(m) == vars(get_metric("svcca"))  # pure: scoring stores nothing on the metric


def test_svcca_degeneracy_flag():
    rng = np.random.default_rng(0)
    m = get_metric("svcca", var=1.0)
    for n, flagged in [(60, True), (600, False)]:  # d = 30 kept dims: n = 2d is degenerate, n = 20d is not
        X, Y = rng.standard_normal((n, 30)), rng.standard_normal((n, 30))
        res = m(X, Y)
        assert res.diagnostics["degenerate"] is flagged
    assert m(rng.standard_normal((60, 30)), rng.standard_normal((60, 30))).score > 0.5  # why: near 1 on pure noise


def test_pwcca_bounds():
    X = spread()
    assert get_metric("pwcca").score(X, X @ ortho_group.rvs(30, random_state=0)) == pytest.approx(1.0, abs=1e-6)
    assert 0 <= get_metric("pwcca").score(X, spread(seed=5)) < 0.5


@pytest.mark.parametrize("inner", ["correlation", "cosine", "euclidean"])
def test_rsa_identity_and_reference(inner):
    X = spread(n=60)
    rsa = get_metric("rsa", inner=inner)
    assert rsa.score(X, X) == pytest.approx(1.0)
    Y = X @ np.random.default_rng(1).standard_normal((30, 12)) + 0.3 * spread(n=60, d=12, seed=4)
    ref = spearmanr(pdist(X, inner), pdist(Y, inner)).statistic
    assert rsa.score(X, Y) == pytest.approx(ref, abs=1e-10)
    perm = np.random.default_rng(2).permutation(60)
    assert rsa.permuter(X, Y)(perm) == pytest.approx(rsa.score(X, Y[perm]), abs=1e-6)


def test_mknn_identity_and_chance():
    X = spread(n=300)
    m = get_metric("mknn", k=10)
    assert m.score(X, X) == 1.0
    rng = np.random.default_rng(0)
    vals = [m.score(rng.standard_normal((300, 5)), rng.standard_normal((300, 5))) for _ in range(20)]
    assert np.mean(vals) == pytest.approx(mknn_chance(300, 10), rel=0.25)
    perm = rng.permutation(300)
    Y = spread(n=300, seed=3)
    assert m.permuter(X, Y)(perm) == pytest.approx(m.score(X, Y[perm]))


def test_procrustes_against_scipy():
    X = spread()
    Q = ortho_group.rvs(30, random_state=1)
    assert get_metric("procrustes").score(X, 2 * X @ Q + 1) == pytest.approx(0.0, abs=1e-6)
    Y = spread(seed=7)
    m = ProcrustesMap().fit(X, Y)
    Xn = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0))
    Yn = (Y - Y.mean(0)) / np.linalg.norm(Y - Y.mean(0))
    R, _ = orthogonal_procrustes(Xn, Yn)
    np.testing.assert_allclose(m.Q_, R, atol=1e-8)
    assert m.score(X, Y) == pytest.approx(np.linalg.norm(Xn @ R - Yn))
    assert get_metric("procrustes").score(X, Y) == pytest.approx(np.linalg.norm(Xn @ R - Yn), abs=1e-8)


def test_ridge_against_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    from sklearn.metrics import r2_score

    X, Y = spread(), spread(seed=2, d=12)
    ours = RidgeMap(alpha=2.0).fit(X, Y)
    ref = sklearn.Ridge(alpha=2.0).fit(X, Y)
    np.testing.assert_allclose(ours.transform(X), ref.predict(X), atol=1e-8)
    assert ours.score(X, Y) == pytest.approx(r2_score(Y, ref.predict(X), multioutput="variance_weighted"))
    res = get_metric("linear-r2")(X, X @ np.random.default_rng(0).standard_normal((30, 10)))
    assert res.score > 0.99 and res.diagnostics["cosine"] > 0.99


def test_permutation_pvalue_uniform_under_null_and_tiny_for_planted():
    rng = np.random.default_rng(0)
    cka = get_metric("cka-linear")
    ps = [score_with_null(cka, rng.standard_normal((40, 4)), rng.standard_normal((40, 4)), 99, seed=s).p_value
          for s in range(60)]
    hist = np.histogram(ps, bins=4, range=(0, 1))[0]
    assert hist.min() >= 6  # roughly uniform: no quarter is nearly empty
    X = spread(n=200)
    res = score_with_null(get_metric("svcca"), X, X @ ortho_group.rvs(30, random_state=0) + 0.1 * spread(n=200, seed=1), 200)
    assert res.p_value == pytest.approx(1 / 201) and res.z > 5
    assert res.score > res.null_mean + 5 * res.null_sd
    d = score_with_null(get_metric("procrustes"), X, X + 0.01, 50)  # distance: small is similar
    assert d.p_value == pytest.approx(1 / 51) and d.z > 0


def test_registry_names_are_stable():
    assert {"svcca", "svcca-k1", "pwcca", "rsa", "cka-linear", "cka-linear-unbiased", "mknn", "procrustes",
            "linear-r2"} <= set(metric_names())
    with pytest.raises(Exception, match="unknown similarity metric"):
        get_metric("nope")
    with pytest.raises(Exception, match="has no parameter 'k'"):
        get_metric("svcca", k=10)  # a parameter is never routed by name to a metric that lacks it


def test_recorded_components_come_from_the_full_data():
    from saematch.config import SimilarityConfig
    from saematch.similarity.grid import score_space

    X = spread(n=300)
    rows = score_space(X, X + 0.1 * spread(n=300, seed=2), ("svcca",), SimilarityConfig(n_permutations=5, n_bootstrap=5), "t")
    d = get_metric("svcca")(X, X + 0.1 * spread(n=300, seed=2)).diagnostics
    assert (rows[0]["k_x"], rows[0]["k_y"]) == (d["k_x"], d["k_y"])


@pytest.mark.parametrize("n", [7, 8, 61])
def test_mantel_kernel_against_gather(n):
    from saematch.similarity.mantel import upper_sums

    rng = np.random.default_rng(n)
    A, B = squareform(rng.random(n * (n - 1) // 2)), squareform(rng.random(n * (n - 1) // 2))
    perms = np.stack([rng.permutation(n) for _ in range(5)])
    ref = [0.5 * np.sum(A * B[np.ix_(p, p)]) for p in perms]
    assert upper_sums(A, B, perms) == pytest.approx(ref, rel=1e-5)


def test_rsa_batched_null_and_bootstrap_match_recompute():
    X, Y = spread(n=80), spread(n=80, seed=9)
    rsa = get_metric("rsa")
    perms = np.stack([np.random.default_rng(s).permutation(80) for s in range(4)])
    assert rsa.permuter_batch(X, X + 0.5 * Y)(perms) == pytest.approx([rsa.score(X, (X + 0.5 * Y)[p]) for p in perms], abs=1e-6)
    idx = np.random.default_rng(3).integers(0, 80, 80)  # with repeats: repeated items sit at distance 0
    assert rsa.resampler(X, Y)(idx) == pytest.approx(rsa.score(X[idx], Y[idx]), abs=1e-9)


@pytest.mark.parametrize("n,d", [(30, 40), (200, 5)])  # the n x n Gram route and the d1 x d2 route
@pytest.mark.parametrize("name", ["cka-linear", "cka-linear-unbiased", "svcca", "mknn"])
def test_permuters_equal_recompute(name, n, d):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d)) + rng.standard_normal((n, d))
    m = get_metric(name, **({"k": 5} if name == "mknn" else {}))
    perms = np.stack([rng.permutation(n) for _ in range(3)])
    assert m.permuter_batch(X, Y)(perms) == pytest.approx([m.score(X, Y[p]) for p in perms], rel=1e-5, abs=1e-7)


def test_rsa_coded_null_is_an_exact_test_of_the_coded_statistic():
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr, rankdata

    rng = np.random.default_rng(4)
    n = 150
    X = rng.standard_normal((n, 12))
    Y = X @ rng.standard_normal((12, 12)) + 3 * rng.standard_normal((n, 12))
    coded = get_metric("rsa", quantise_above=0)
    exact = get_metric("rsa")
    perms = np.stack([rng.permutation(n) for _ in range(40)])
    null_c, null_e = coded.permuter_batch(X, Y)(perms), exact.permuter_batch(X, Y)(perms)
    obs = exact.score(X, Y)
    assert coded.permuter_batch(X, Y)(np.arange(n)[None])[0] == pytest.approx(obs, abs=1e-9)
    assert np.abs(null_c - null_e).max() < 0.1 * null_e.std()  # coding moves the statistic far less than its null SD
    # independent formula: Pearson between A's rank vector and 256-level codes of B's rank vector
    a = rankdata(pdist(X, "correlation"))
    b = rankdata(pdist(Y, "correlation"))
    codes = np.rint((b - b.min()) / (b.max() - b.min()) * 255)
    Bq = squareform(codes)

    def stat(p):
        return pearsonr(a, squareform(Bq[np.ix_(p, p)], checks=False))[0]

    t_obs = stat(np.arange(n))
    for p, v in zip(perms, null_c):
        assert (v >= obs) == (stat(p) >= t_obs)
        assert v - obs == pytest.approx(stat(p) - t_obs, abs=1e-6)


def test_average_ranks_equal_scipy_with_ties_negatives_and_near_ties():
    from scipy.stats import rankdata

    from saematch.similarity.ranks import average_ranks

    rng = np.random.default_rng(2)
    base = rng.standard_normal(5000)
    v = np.concatenate([base, base[:500],  # exact ties
                        1.0 + rng.integers(0, 50, 3000) * 1e-15,  # distinct values that share truncated codes
                        np.zeros(40), -np.zeros(3), [np.inf, -np.inf, 1e300, -1e-300]])
    rng.shuffle(v)
    np.testing.assert_array_equal(average_ranks(v), rankdata(v))
    assert average_ranks(np.array([3.0]))[0] == 1.0
