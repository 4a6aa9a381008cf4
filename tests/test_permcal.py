"""Permutation-calibrated scores: agreement with the calibrated-similarity package on the same inputs and
permutations, and the properties the calibration promises (0 under the null at level α, a layer search
that does not inflate false positives)."""

from __future__ import annotations

import numpy as np
import pytest

from saematch.calibration.permcal import calibrate_from_null, draw_permutations, layer_search_calibrate, permutation_calibrate, threshold
from saematch.similarity.base import get_metric


def _pair(rng: np.random.Generator, n: int = 60, signal: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    Z = rng.normal(size=(n, 3))
    return Z @ rng.normal(size=(3, 5)) + rng.normal(size=(n, 5)), signal * Z @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4))


def _reference():
    cs = pytest.importorskip("calibrated_similarity", reason="calibrated-similarity (dev extra) is not installed")
    torch = pytest.importorskip("torch")
    return cs, torch


def _torch_sim(metric, torch):
    return lambda X, Y: torch.tensor(metric.score(X.double().numpy(), Y.double().numpy()))


def _perm_fn(perms, torch):
    it = iter(perms)
    return lambda n, device: torch.as_tensor(next(it))


@pytest.mark.parametrize("name", ["cka-linear", "mknn"])
@pytest.mark.parametrize("signal", [0.0, 0.25, 1.0])
def test_agrees_with_calibrated_similarity_on_the_same_permutations(name, signal):
    cs, torch = _reference()
    rng = np.random.default_rng(int(signal * 100))
    X, Y = _pair(rng, signal=signal)
    metric = get_metric(name)
    perms = draw_permutations(len(X), 200, seed=3)
    ours = permutation_calibrate(metric, X, Y, perms_KN=perms)
    cal, p, tau = cs.calibrate(torch.tensor(X), torch.tensor(Y), _torch_sim(metric, torch), K=200, alpha=0.05,
                               smax=1.0, perm_fn=_perm_fn(perms, torch))
    assert ours.tau == pytest.approx(float(tau), rel=1e-5, abs=1e-6)
    assert ours.p_value == pytest.approx(float(p), abs=1e-6)
    assert ours.calibrated == pytest.approx(float(cal), abs=1e-5)
    assert ours.n_permutations == 200


def test_layer_search_agrees_with_calibrate_layers_max():
    cs, torch = _reference()
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(50, 3))
    X_layers = [Z @ rng.normal(size=(3, 4)) + rng.normal(size=(50, 4)) for _ in range(2)]
    Y_layers = [s * Z @ rng.normal(size=(3, 4)) + rng.normal(size=(50, 4)) for s in (0.0, 0.3, 0.6)]
    metric = get_metric("cka-linear")
    perms = draw_permutations(50, 200, seed=1)
    ours = layer_search_calibrate(metric, X_layers, Y_layers, perms_KN=perms)
    cal, p, tau = cs.calibrate_layers([torch.tensor(a) for a in X_layers], [torch.tensor(b) for b in Y_layers],
                                      _torch_sim(metric, torch), agg="max", K=200, alpha=0.05, smax=1.0,
                                      perm_fn=_perm_fn(perms, torch))
    assert ours.result.tau == pytest.approx(float(tau), rel=1e-5, abs=1e-6)
    assert ours.result.p_value == pytest.approx(float(p), abs=1e-6)
    assert ours.result.calibrated == pytest.approx(float(cal), abs=1e-5)
    assert ours.scores_AB[ours.best] == ours.scores_AB.max()


def test_threshold_and_p_follow_their_definitions():
    null = np.arange(1.0, 20.0)  # K = 19
    assert threshold(100.0, null, 0.05) == 19.0  # ceil(0.95 * 20) = 19th of 20 values
    assert threshold(100.0, null, 0.5) == 10.0
    r = calibrate_from_null(100.0, null, 0.05, s_max=200.0)
    assert r.p_value == pytest.approx(1 / 20)
    assert r.calibrated == pytest.approx((100 - 19) / (200 - 19))
    low = calibrate_from_null(5.0, null, 0.05)
    assert low.calibrated == 0.0 and low.p_value == pytest.approx(16 / 20)  # 5..19 at least as large


def test_planted_signal_is_calibrated_above_zero_with_the_smallest_p():
    X, Y = _pair(np.random.default_rng(0), n=80, signal=1.5)
    r = permutation_calibrate(get_metric("cka-linear"), X, Y, n_permutations=199, seed=0)
    assert r.p_value == pytest.approx(1 / 200) and 0 < r.calibrated <= 1 and r.score > r.tau


def test_distances_are_calibrated_on_their_negation():
    X, Y = _pair(np.random.default_rng(2), n=60, signal=2.0)
    r = permutation_calibrate(get_metric("procrustes"), X, Y, n_permutations=99, seed=0)
    assert r.s_max is None and r.score < 0 and r.p_value == pytest.approx(1 / 100) and r.calibrated > 0


def _null_rejections(n_sets: int, n_b_layers: int, search: bool) -> float:
    """Share of independent data sets where the best of n_b_layers scores is called above chance at α = 0.05."""
    rng = np.random.default_rng(9)
    metric = get_metric("cka-linear")
    hits = 0
    for s in range(n_sets):
        X = rng.normal(size=(30, 2))
        Ys = [rng.normal(size=(30, 2)) for _ in range(n_b_layers)]
        if search:
            hits += layer_search_calibrate(metric, [X], Ys, n_permutations=99, seed=s).result.calibrated > 0
        else:  # calibrate each layer on its own, then keep the best: the winner's curse
            hits += max(permutation_calibrate(metric, X, Y, n_permutations=99, seed=s).calibrated for Y in Ys) > 0
    return hits / n_sets


def test_layer_search_null_holds_alpha_where_per_layer_calibration_of_the_best_does_not():
    per_layer, search = _null_rejections(150, 8, False), _null_rejections(150, 8, True)
    assert search <= 0.10, search  # nominal 0.05 (binomial SD ≈ 0.018 at 150 sets)
    assert per_layer >= 0.2, per_layer  # ≈ 1 − 0.95⁸ = 0.34 expected


def test_compare_stage_layer_search_finds_the_planted_b_layer():
    from saematch.config import SimilarityConfig
    from saematch.similarity.stage import layer_search

    rng = np.random.default_rng(4)
    Z = rng.normal(size=(80, 3))
    A = Z @ rng.normal(size=(3, 6)) + 0.5 * rng.normal(size=(80, 6))
    Bs = {lb: (lb == 2) * Z @ rng.normal(size=(3, 5)) + rng.normal(size=(80, 5)) for lb in (0, 1, 2, 3)}
    rows = {r["metric"]: r for r in layer_search(A, Bs, ("cka-linear", "mknn"), SimilarityConfig())}
    for r in rows.values():
        assert r["best_layer_b"] == 2 and r["n_layers_b"] == 4 and r["n_permutations"] >= 200
        assert r["p_value"] == pytest.approx(1 / (1 + r["n_permutations"])) and r["calibrated"] > 0
