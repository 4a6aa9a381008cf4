"""Depth agreement: Spearman ρ of best-layer depth against depth, with an honest permutation p-value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from saematch.similarity.grid import EXACT_MAX_LAYERS, depth_agreement, depth_test


@pytest.mark.parametrize("n", [4, 5, 6])
def test_perfect_order_has_exact_p_of_one_over_n_factorial(n):
    t = depth_test(np.arange(n) / n, (np.arange(n) + 1) / n)
    assert t.spearman_depth == pytest.approx(1.0)
    assert t.p_method == "exact" and t.p_reason == ""
    assert t.p_value == pytest.approx(1 / math.factorial(n))


def test_reversed_order_is_not_significant_one_sided():
    t = depth_test(np.arange(5), -np.arange(5.0))
    assert t.spearman_depth == pytest.approx(-1.0)
    assert t.p_value == pytest.approx(1.0)  # every pairing has ρ >= -1


@pytest.mark.parametrize("n", [2, 3])
def test_fewer_than_four_layers_gives_no_p_value_with_the_reason(n):
    t = depth_test(np.arange(n), np.arange(n))
    assert np.isnan(t.p_value) and t.p_method == "none"
    assert t.p_reason == f"needs >= 4 layers, got {n}"
    assert t.spearman_depth == pytest.approx(1.0)  # ρ itself is still reported


def test_constant_best_layer_has_no_rho_and_says_why():
    t = depth_test(np.arange(6), np.full(6, 0.5))
    assert np.isnan(t.spearman_depth) and np.isnan(t.p_value)
    assert "same best B layer" in t.p_reason


def test_exact_p_counts_tied_pairings_by_brute_force():
    """With ties in the best layers, the exact p equals a direct count over all n! pairings."""
    from itertools import permutations

    from scipy.stats import spearmanr

    x, y = np.arange(6.0), np.array([0.1, 0.1, 0.4, 0.3, 0.9, 0.9])
    obs = spearmanr(x, y).statistic
    null = np.array([spearmanr(x, y[list(p)]).statistic for p in permutations(range(6))])
    t = depth_test(x, y)
    assert t.spearman_depth == pytest.approx(obs)
    assert t.p_value == pytest.approx(np.mean(null >= obs - 1e-12))


def test_many_layers_use_a_stated_monte_carlo_count_and_are_calibrated_under_the_null():
    n = EXACT_MAX_LAYERS + 4
    t = depth_test(np.arange(n), np.arange(n), n_resamples=999)
    assert t.p_method == "monte-carlo (999 pairings)"
    assert t.p_value == pytest.approx(1 / 1000)  # (1 + 0) / (1 + K): no random pairing reaches ρ = 1
    rng = np.random.default_rng(0)
    ps = np.array([depth_test(np.arange(n), rng.permutation(n), n_resamples=199, seed=s).p_value for s in range(60)])
    assert 0.02 <= np.mean(ps <= 0.2) <= 0.4  # about 20% of null p-values fall below 0.2


def test_depth_agreement_table_has_the_p_columns_per_metric():
    best = pd.DataFrame({"metric": ["m"] * 4 + ["k"] * 3, "depth_a": [0.25, 0.5, 0.75, 1.0, 0.3, 0.6, 0.9],
                         "depth_b": [0.2, 0.4, 0.6, 0.8, 0.2, 0.5, 0.9]})
    d = depth_agreement(best).set_index("metric")
    assert {"spearman_depth", "p_value", "p_method", "p_reason", "n_layers"} <= set(d.columns)
    assert d.loc["m", "p_value"] == pytest.approx(1 / 24) and d.loc["m", "p_method"] == "exact"
    assert np.isnan(d.loc["k", "p_value"]) and d.loc["k", "p_reason"] == "needs >= 4 layers, got 3"
