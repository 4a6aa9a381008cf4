"""Calibration: held-out matching, universality against planted ground truth, calibrated readouts, SVCCA on units."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from saematch.calibration import (
    CalibrationConfig,
    HeldOut,
    Resampled,
    calibrate_readout,
    calibrated,
    heldout_match,
    item_mean,
    matched_unit_acts,
    metric_readout,
    pair_correlations,
    pair_universality,
    run_heldout,
    run_universality,
    shuffle_units,
    split_units,
    svcca_on_units,
    svcca_units_readout,
    universal_fraction,
    universal_fractions,
)
from saematch.errors import ConfigError, SaematchError
from saematch.registry import MATCHERS

MATCH = MATCHERS.get("hungarian")()


# ---------------------------------------------------------------- synthetic sparse "SAEs"

def latents(rng: np.random.Generator, n: int, n_lat: int, p: float = 0.03) -> np.ndarray:
    """Dense [n, n_lat] non-negative sparse latent activations (tests only: tiny)."""
    return rng.exponential(1.0, (n, n_lat)) * (rng.random((n, n_lat)) < p)


def noisy_copy(rng: np.random.Generator, Z: np.ndarray, jitter: float = 0.3, drop: float = 0.1,
               spurious: float = 0.003) -> sp.csr_matrix:
    """An SAE's view of latents Z: jittered magnitudes, dropped and spurious firings (CSR)."""
    X = Z * np.exp(jitter * rng.standard_normal(Z.shape)) * (rng.random(Z.shape) >= drop)
    X += rng.exponential(1.0, Z.shape) * (rng.random(Z.shape) < spurious)
    return sp.csr_matrix(X)


def permuted(rng: np.random.Generator, X: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """Columns shuffled (feature order carries no information); ``pos[latent] = column``."""
    perm = rng.permutation(X.shape[1])
    pos = np.empty_like(perm)
    pos[perm] = np.arange(len(perm))
    return X[:, perm].tocsr(), pos


@pytest.fixture(scope="module")
def planted():
    """A and B share 60 of their 200 features' latents; twins re-observe each model's latents; the floor is
    an independent sparse model.  Returns everything the universality stage needs, plus the truth."""
    rng = np.random.default_rng(0)
    n, f, shared = 6000, 200, 60
    S = latents(rng, n, shared)
    ZA = np.hstack([S, latents(rng, n, f - shared)])
    ZB = np.hstack([S, latents(rng, n, f - shared)])
    A, pos_a = permuted(rng, noisy_copy(rng, ZA))
    B, pos_b = permuted(rng, noisy_copy(rng, ZB))
    A_twin, _ = permuted(rng, noisy_copy(rng, ZA))
    B_twin, _ = permuted(rng, noisy_copy(rng, ZB))
    floor, _ = permuted(rng, noisy_copy(rng, latents(rng, n, f)))
    doc = np.repeat(rng.permutation(60), n // 60)
    train = split_units(doc, 0.5, seed=1)
    truth = {(int(pos_a[i]), int(pos_b[i])) for i in range(shared)}
    return dict(A=A, B=B, A_twin=A_twin, B_twin=B_twin, floor=floor, train=train, truth=truth, f=f,
                frac=shared / f)


# ---------------------------------------------------------------- held-out matching

def test_split_units_keeps_documents_whole_and_is_seeded():
    rng = np.random.default_rng(3)
    doc = np.array([f"doc{d}" for d in rng.integers(0, 40, 2000)])  # unsorted, string ids, uneven sizes
    m = split_units(doc, 0.3, seed=5)
    assert not set(doc[m]) & set(doc[~m])
    assert set(doc[m]) | set(doc[~m]) == set(doc)
    assert abs(m.mean() - 0.3) < 0.05
    assert np.array_equal(m, split_units(doc, 0.3, seed=5))
    assert not np.array_equal(m, split_units(doc, 0.3, seed=6))
    assert 0 < split_units(np.array([0, 0, 1]), 0.99).sum() < 3  # never all units on one side
    with pytest.raises(SaematchError, match="at least 2"):
        split_units(np.zeros(10, int), 0.5)
    with pytest.raises(SaematchError):
        split_units(doc, 1.0)


def test_pair_correlations_equal_numpy_corrcoef():
    rng = np.random.default_rng(1)
    XA = sp.random(300, 40, density=0.1, random_state=1, format="csr")
    XB = sp.random(300, 30, density=0.2, random_state=2, format="csr")
    XB = sp.csr_matrix(np.hstack([XB.toarray(), np.full((300, 1), 2.5), np.zeros((300, 1))]))  # constant columns
    rows = rng.integers(0, 40, 50)
    cols = np.r_[rng.integers(0, 30, 48), 30, 31]
    got = pair_correlations(XA, XB, rows, cols)
    DA, DB = XA.toarray(), XB.toarray()
    want = [np.corrcoef(DA[:, r], DB[:, c])[0, 1] for r, c in zip(rows[:48], cols[:48])]
    np.testing.assert_allclose(got[:48], want, atol=1e-10)
    assert np.isnan(got[48:]).all()  # constant on these units: no correlation, kept as NaN
    with pytest.raises(SaematchError, match="out of range"):
        pair_correlations(XA, XB, [40], [0])


def test_heldout_deflates_selection_on_noise():
    """Many pure-noise features: Hungarian on train picks lucky pairs whose test correlation collapses to 0,
    while 20 planted real pairs keep their correlation out of sample."""
    rng = np.random.default_rng(2)
    n, f, real = 800, 300, 20
    S = latents(rng, n, real, p=0.05)
    A = noisy_copy(rng, np.hstack([S, latents(rng, n, f - real, p=0.05)]))
    B = noisy_copy(rng, np.hstack([S, latents(rng, n, f - real, p=0.05)]))
    train = split_units(np.repeat(np.arange(40), n // 40), 0.5, seed=0)
    held = heldout_match(A, B, train, MATCH)
    is_real = (held.feature_a < real) & (held.feature_a == held.feature_b)
    assert is_real.sum() >= real - 3  # a planted pair can lose to a lucky one on 400 train units
    noise = ~is_real & ~np.isnan(held.corr_test)
    assert held.corr_train[noise].mean() > 0.1
    assert abs(held.corr_test[noise].mean()) < 0.03
    assert held.corr_train[noise].mean() - held.corr_test[noise].mean() > 0.1
    assert held.corr_test[is_real].min() > 0.4
    assert np.nanmean(held.corr_test) < np.mean(held.corr_train)
    sparse = heldout_match(A, B, train, MATCHERS.get("hungarian")(dense_limit=0))  # certified sparse solver: same pairs
    assert dict(zip(held.feature_a, held.feature_b)) == dict(zip(sparse.feature_a, sparse.feature_b))


def test_heldout_nan_for_features_silent_on_test_and_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    Z = latents(rng, 400, 10, p=0.2)
    train = np.arange(400) < 200
    Z[200:, 3] = 0.0  # fires on train units only
    A, B = noisy_copy(rng, Z, spurious=0), noisy_copy(rng, Z, spurious=0)
    held = run_heldout(A, B, train, MATCH, tmp_path)
    i = np.flatnonzero(held.feature_a == 3)
    assert len(i) == 1 and np.isnan(held.corr_test[i[0]])  # kept and flagged, not dropped
    back = HeldOut.load(tmp_path)
    np.testing.assert_array_equal(back.feature_a, held.feature_a)
    np.testing.assert_array_equal(back.corr_test, held.corr_test)
    assert "corr_heldout" in held.frame().columns
    dropped = heldout_match(A, B, train, MATCH, drop_a=np.arange(10) == 0)
    assert 0 not in dropped.feature_a


# ---------------------------------------------------------------- universality against planted truth

def test_universal_fraction_recovered_and_ceiling_above_floor(planted, tmp_path):
    p, cfg = planted, CalibrationConfig(n_bootstrap=50)
    pair = heldout_match(p["A"], p["B"], p["train"], MATCH)
    twin_a = heldout_match(p["A"], p["A_twin"], p["train"], MATCH)
    twin_b = heldout_match(p["B"], p["B_twin"], p["train"], MATCH)
    floor = heldout_match(p["A"], p["floor"], p["train"], MATCH)
    res = run_universality(pair, twin_a, twin_b, floor, p["f"], p["f"], cfg, tmp_path,
                           labels={"layer_a": 1, "layer_b": 2})
    assert abs(res.fraction.fraction - p["frac"]) <= 0.05
    assert res.fraction.ci_low <= res.fraction.fraction <= res.fraction.ci_high
    found = {(a, b) for a, b, u in res.pairs[["feature_a", "feature_b", "universal"]].itertuples(index=False) if u}
    assert len(found & p["truth"]) >= 0.9 * len(p["truth"]) and len(found - p["truth"]) <= 3
    r = res.matched_corr
    assert r.floor.value < r.score.value < r.ceiling.value
    assert r.ceiling.ci_low > r.floor.ci_high and not r.uninformative
    assert 0 < r.calibrated.value < 1
    assert ((res.pairs["floor_percentile"] >= 0) & (res.pairs["floor_percentile"] <= 100)).all()
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["universal_fraction"]["n_universal"] == int(res.pairs["universal"].sum())
    assert (tmp_path / "universality.parquet").exists()
    per_layer = universal_fractions(res.pairs, ["layer_a"], n_boot=20)
    assert per_layer["fraction"].iloc[0] == pytest.approx(res.fraction.fraction)


def test_shuffle_floor_sits_at_chance(planted):
    p = planted
    shuffled = heldout_match(p["A"], shuffle_units(p["B"], seed=0), p["train"], MATCH)
    assert abs(np.nanmean(shuffled.corr_test)) < 0.02


def test_pair_universality_rules():
    floor = np.linspace(-0.1, 0.1, 1001)  # 99th percentile 0.098
    corr = np.array([0.5, 0.3, 0.05, np.nan, 0.5])
    u = pair_universality(corr, [0.8, 0.7, 0.1, 0.9, np.nan], [0.9, 0.9, 0.1, 0.9, 0.9], floor)
    # beats floor and twins | below half its weaker twin | at the floor | constant on test | no twin partner
    assert u.universal.tolist() == [True, False, False, False, False]
    assert u.floor_percentile[0] == 100 and np.isnan(u.floor_percentile[3])
    assert 50 < u.floor_percentile[2] < 100
    lenient = pair_universality([0.35], [0.6], [1.0], floor)  # 0.35 >= 0.5 * min = 0.3
    assert lenient.universal[0]
    assert not pair_universality([0.35], [0.6], [1.0], floor, how="mean").universal[0]  # 0.5 * mean = 0.4
    assert not pair_universality([0.35], [0.6], [1.0], floor, how="geomean").universal[0]  # 0.5 * 0.775
    with pytest.raises(SaematchError, match="empty"):
        pair_universality(corr, corr, corr, [np.nan])
    assert universal_fraction([True, False], n_total=4, n_boot=10).fraction == 0.25


# ---------------------------------------------------------------- calibrated readouts

def test_calibrated_invariants():
    assert calibrated(0.2, 0.2, 0.7) == 0.0
    assert calibrated(0.7, 0.2, 0.7) == pytest.approx(1.0)
    assert calibrated(0.45, 0.2, 0.7) == pytest.approx(0.5)
    np.testing.assert_allclose(calibrated(np.array([0.2, 0.7]), 0.2, 0.7), [0.0, 1.0])
    assert np.isnan(calibrated(0.5, 0.7, 0.7)) and np.isnan(calibrated(0.5, 0.7, 0.2))


def test_uninformative_fires_only_when_floor_and_ceiling_coincide():
    rng = np.random.default_rng(5)
    score = item_mean(rng.normal(0.3, 0.1, 300))
    same = calibrate_readout(score, item_mean(rng.normal(0.3, 0.1, 300)), item_mean(rng.normal(0.3, 0.1, 300)),
                             n_boot=100, seed=0)
    apart = calibrate_readout(score, item_mean(rng.normal(0.0, 0.1, 300)), item_mean(rng.normal(0.6, 0.1, 300)),
                              n_boot=100, seed=0)
    assert same.uninformative and not apart.uninformative
    assert apart.separation > 3
    for est in (apart.score, apart.floor, apart.ceiling, apart.calibrated):
        assert est.ci_low <= est.value <= est.ci_high and est.se > 0
    assert apart.calibrated.value == pytest.approx(calibrated(apart.score.value, apart.floor.value,
                                                              apart.ceiling.value))
    assert set(apart.row()) >= {"score", "floor_ci_low", "calibrated_se", "uninformative"}
    assert calibrate_readout(score, score, score, n_boot=20).uninformative


def test_unit_readout_with_ceiling_by_construction():
    """mknn over units: the pair and the floor share units (joint bootstrap); the ceiling is 1, not computed."""
    from saematch.similarity.base import get_metric

    rng = np.random.default_rng(6)
    X = rng.standard_normal((120, 8))
    Y = X @ rng.standard_normal((8, 8)) * 0.5 + 0.2 * rng.standard_normal((120, 8))
    R = rng.standard_normal((120, 8))
    mknn = get_metric("mknn", k=5)
    res = calibrate_readout(metric_readout(mknn, X, Y, distinct=True), metric_readout(mknn, X, R, distinct=True),
                            None, n_boot=30, seed=1, joint=True)
    assert res.ceiling_by_construction and res.ceiling.value == 1.0 and res.ceiling.se == 0.0
    assert res.floor.value < res.score.value < 1 and not res.uninformative
    assert res.calibrated.value == pytest.approx((res.score.value - res.floor.value) / (1 - res.floor.value))
    with pytest.raises(SaematchError, match="same items"):
        calibrate_readout(item_mean(np.ones(5)), item_mean(np.ones(6)), joint=True)


# ---------------------------------------------------------------- SVCCA on units

def test_svcca_degenerate_flag_at_2d_not_at_20d():
    rng = np.random.default_rng(7)
    d = 30
    small = svcca_on_units(rng.standard_normal((2 * d, d)), rng.standard_normal((2 * d, d)), max_dims=d)
    big = svcca_on_units(rng.standard_normal((20 * d, d)), rng.standard_normal((20 * d, d)), max_dims=d)
    assert small.degenerate and not big.degenerate
    assert small.score > big.score + 0.3  # few items per dimension: unrelated data looks similar
    capped = svcca_on_units(rng.standard_normal((2 * d, d)), rng.standard_normal((2 * d, d)))
    assert not capped.degenerate and capped.k_a <= 2 * d // 10


def test_svcca_on_units_separates_shared_from_independent():
    rng = np.random.default_rng(8)
    Z = latents(rng, 3000, 40, p=0.05)
    A = noisy_copy(rng, Z).toarray()
    B = noisy_copy(rng, Z).toarray()
    indep = noisy_copy(rng, latents(rng, 3000, 40, p=0.05)).toarray()
    shared, floor = svcca_on_units(A, B), svcca_on_units(A, indep)
    assert not shared.degenerate and shared.score > floor.score + 0.4
    r = calibrate_readout(svcca_units_readout(A, B), svcca_units_readout(A, indep), n_boot=10, joint=True)
    assert r.score.value == pytest.approx(shared.score)
    XA, XB = sp.csr_matrix(A), sp.csr_matrix(B)
    a, b = matched_unit_acts(XA, XB, [3, 1], [0, 2], units=np.arange(3000) < 100)
    np.testing.assert_array_equal(a, A[:100][:, [3, 1]])
    np.testing.assert_array_equal(b, B[:100][:, [0, 2]])
    assert matched_unit_acts(XA, XB, [0], [0], max_units=50)[0].shape == (50, 1)


def test_config_validates():
    with pytest.raises(ConfigError, match="heldout_frac"):
        CalibrationConfig(heldout_frac=1.0)
    with pytest.raises(ConfigError, match="twin_reference"):
        CalibrationConfig(twin_reference="max")
    assert isinstance(Resampled(lambda idx: 0.0, 3).value(), float)
