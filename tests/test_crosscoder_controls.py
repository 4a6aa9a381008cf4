"""Crosscoder controls: the decoder-penalty rule, isotropic shared data, dedicated latents, fractions over all
latents (dead included), training on train units only, and the spectrum-matched floor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from saematch.crosscoder import CrosscoderConfig, analyse_crosscoder, train_crosscoder
from saematch.crosscoder import train as train_mod
from saematch.crosscoder.data import ArraySource, as_sources
from saematch.crosscoder.floors import moments, spectrum_matched
from saematch.crosscoder.planted import PRIV_A, PRIV_B, best_latents, planted, private_recall
from saematch.crosscoder.rule import GRID, L0_TOLERANCE, TRAIN, choose, evaluate_grid, penalty_rule
from saematch.crosscoder.summary import aggregate, spread
from saematch.errors import SaematchError


def _cfg(**kw) -> CrosscoderConfig:
    base = dict(expansion=2, k=2, lr=3e-3, training_tokens=200_000, batch_size=256, checkpoint_every=10**6,
                log_every=100, decoder_penalty=0.0)
    return CrosscoderConfig(**{**base, **kw})


def test_choose_takes_the_largest_feasible_lambda():
    table = [{"lambda": 0.0, "l0": 2.0, "fvu": 0.40}, {"lambda": 0.1, "l0": 2.0, "fvu": 0.405},
             {"lambda": 0.3, "l0": 1.5, "fvu": 0.402}, {"lambda": 1.0, "l0": 2.0, "fvu": 0.5}]
    lam, ok = choose(table, k=2)
    assert lam == 0.1 and ok == [True, True, False, False]  # 0.3 fails on L0, 1.0 on FVU
    with pytest.raises(ValueError, match="lambda = 0"):
        choose(table[1:], k=2)


def test_penalty_rule_is_deterministic_and_respects_its_constraint():
    small = replace(TRAIN, training_tokens=30_000)
    first, second = evaluate_grid((0.0, 0.3), small), evaluate_grid((0.0, 0.3), small)
    assert first == second  # bit for bit: fixed data, seeds, one thread
    rule = penalty_rule()
    assert rule.grid == GRID and rule.chosen in GRID and CrosscoderConfig().penalty() == rule.chosen
    base = next(r for r in rule.table if r["lambda"] == 0.0)
    for r in rule.table:
        meets = r["l0"] >= (1 - L0_TOLERANCE) * TRAIN.k and r["fvu"] <= base["fvu"] + 0.01
        assert r["feasible"] == (meets or r["lambda"] == 0.0), r
    chosen = next(r for r in rule.table if r["lambda"] == rule.chosen)
    assert chosen["feasible"] and not any(r["feasible"] for r in rule.table if r["lambda"] > rule.chosen)
    assert rule.to_dict()["rule"].startswith("largest lambda") and len(rule.to_dict()["table"]) == len(GRID)


def _isotropic(independent: bool, n: int = 8000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian isotropic sources in 12 dimensions, rotated into A (20 dims) and B (28 dims, 2x the scale); the
    same source in both models, or (``independent``) a separate one per model.  (A decoder-norm crosscoder does
    not separate independent dense Gaussian parts either: a latent fired by a joint direction reconstructs both,
    so only the shared case is a test.)"""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 12))
    zb = rng.standard_normal((n, 12)) if independent else z
    QA, QB = (np.linalg.qr(rng.standard_normal((d, 12)))[0].T for d in (20, 28))
    xA = z @ QA + 0.05 * rng.standard_normal((n, 20))
    xB = 2 * (zb @ QB) + 0.1 * rng.standard_normal((n, 28))
    return xA.astype(np.float32), xB.astype(np.float32)


def _exclusive(xA: np.ndarray, xB: np.ndarray, cfg: CrosscoderConfig, tmp_path, name: str) -> tuple[float, object]:
    res = train_crosscoder([xA, xB], cfg, tmp_path / name)
    an = analyse_crosscoder(res.crosscoder, [xA, xB], cfg)
    return an.summary["a_only_fraction"] + an.summary["b_only_fraction"], (res.crosscoder, an)


def test_isotropic_data_present_in_both_models_is_not_exclusive(tmp_path):
    lam = penalty_rule().chosen
    for pen in (lam, max(GRID)):  # at the rule's lambda and at the grid's largest
        excl, _ = _exclusive(*_isotropic(False), _cfg(k=4, training_tokens=100_000, decoder_penalty=pen), tmp_path,
                             f"same{pen}")
        assert excl <= 0.05, f"lambda {pen}: {excl:.0%} of latents exclusive on data both models carry"
    # sparse features both models carry, buried in A under isotropic noise of 4x their variance (as a random-init
    # network's near-isotropic activations would bury them): still shared, though each buys A little reconstruction
    data = planted(seed=2)
    xA = (data.xA + np.random.default_rng(5).standard_normal(data.xA.shape)).astype(np.float32)
    _, (cc, an) = _exclusive(xA, data.xB, _cfg(decoder_penalty=lam), tmp_path, "buried")
    W = [cc.dec(m).detach().double().numpy() for m in range(2)]
    cls = an.latents["class"].to_numpy()
    shared = [cls[j] == "shared" for t, j, c in best_latents(W, data) if t == "shared" and c > 0.9]
    assert len(shared) >= 14 and np.mean(shared) >= 0.9, (len(shared), np.mean(shared))
    assert an.summary["fvu_a"] > 0.5  # the noise really dominates A


def _recall(data, cfg: CrosscoderConfig, share: float, tmp_path) -> tuple[float, object]:
    res = train_crosscoder([data.xA, data.xB], cfg, tmp_path / f"{cfg.decoder_penalty}-{share}", dedicated_share=share)
    an = analyse_crosscoder(res.crosscoder, [data.xA, data.xB], cfg)
    W = [res.crosscoder.dec(m).detach().double().numpy() for m in range(2)]
    return private_recall(W, an.latents["class"].to_numpy(), data), (res.crosscoder, an)


@pytest.mark.parametrize("sigma", [0.0, 0.45])
def test_dedicated_latents_recover_private_features_at_least_as_well(tmp_path, sigma):
    data = planted(seed=1, sigma=sigma)
    share = (PRIV_A + PRIV_B) / 64  # the planted private share of a 64-latent dictionary
    cfg = _cfg(decoder_penalty=penalty_rule().chosen)
    plain, _ = _recall(data, cfg, 0.0, tmp_path)
    ded, (cc, an) = _recall(data, cfg, share, tmp_path)
    assert ded >= 0.9 and ded >= plain, (plain, ded)
    assert cc.dedicated == [PRIV_A, PRIV_B] and set(an.latents["block"]) == {"shared", "m0", "m1"}
    for m in range(2):  # a dedicated latent never reads or writes the other model
        other = cc.dec_mask[:, m] == 0
        assert int(other.sum()) == cc.dedicated[1 - m] and float(cc.W_dec[m][other].abs().max()) == 0.0
        assert float(cc.enc(m)[:, other].abs().max()) == 0.0
    lat = an.latents
    assert set(lat.loc[lat["block"] == "m0", "class"]) <= {"a_only", "dead"}
    assert set(lat.loc[lat["block"] == "m1", "class"]) <= {"b_only", "dead"}


def test_fractions_cover_all_latents_with_dead_as_a_class(tmp_path):
    data = planted(n=4000)
    cfg = _cfg(expansion=6, training_tokens=20_000, aux_coefficient=0.0)  # far more latents than features
    res = train_crosscoder([data.xA, data.xB], cfg, tmp_path)
    an = analyse_crosscoder(res.crosscoder, [data.xA, data.xB], cfg)
    s, lat = an.summary, an.latents
    assert s["n_dead"] > 0 and s["n_dead"] == int((lat["class"] == "dead").sum())
    fr = [s[f"{c}_fraction"] for c in ("shared", "a_only", "b_only", "dead")]
    assert sum(fr) == pytest.approx(1.0) and s["shared_fraction"] == s["n_shared"] / s["n_latents"]
    assert s["n_live"] + s["n_dead"] == s["n_latents"] == res.crosscoder.d_latent
    recs = [{"variant": "plain", "seed": i, "summary": {**s, "shared_fraction": s["shared_fraction"] + d,
                                                          "dead_fraction": s["dead_fraction"] - d},
             "latent_scaling": {"n_suspect": 1}, "agreement": None} for i, d in enumerate((0.0, 0.01, -0.01))]
    agg = aggregate(recs)["plain"]
    means = [agg[f"{c}_fraction"]["mean"] for c in ("shared", "a_only", "b_only", "dead")]
    assert sum(means) == pytest.approx(1.0) and agg["shared_fraction"]["n"] == 3
    assert agg["shared_fraction"]["min"] == pytest.approx(s["shared_fraction"] - 0.01)
    assert agg["shared_fraction"]["sd"] == pytest.approx(0.01) and spread([0.5])["sd"] is None


def test_training_reads_train_units_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 3000
    xA = rng.standard_normal((n, 6)).astype(np.float32)
    xA[:, 0] = np.arange(n)  # the unit's id travels in the batch (exact in float32)
    xB = np.concatenate([2 * xA[:, 1:], rng.standard_normal((n, 3))], 1).astype(np.float32)
    doc = np.arange(n) // 100  # 30 'documents' of 100 units
    train = np.isin(doc, rng.permutation(30)[:20])
    seen: list[np.ndarray] = []
    step = train_mod._step

    def spy(st, xs, cfg):
        seen.append(np.rint(xs[0][:, 0].numpy() / float(st.model.scale[0])).astype(np.int64))
        return step(st, xs, cfg)

    monkeypatch.setattr(train_mod, "_step", spy)
    cfg = _cfg(k=2, training_tokens=64 * 60, batch_size=64)
    res = train_crosscoder([xA, xB], cfg, tmp_path, train_rows=train)
    ids = np.concatenate(seen)
    assert len(seen) == cfg.steps and res.n_train == int(train.sum())
    assert train[ids].all(), "a test unit reached a training batch"
    assert len(np.unique(ids)) > 0.9 * train.sum()  # and the train units are all used
    an = analyse_crosscoder(res.crosscoder, [xA, xB], cfg, train_rows=train, test_rows=~train)
    assert an.summary["n_heldout_units"] == int((~train).sum())
    with pytest.raises(SaematchError, match="overlap"):
        analyse_crosscoder(res.crosscoder, [xA, xB], cfg, train_rows=train, test_rows=np.ones(n, bool))


def test_spectrum_matched_floor_has_the_real_covariance():
    rng = np.random.default_rng(1)
    n, d = 5000, 8
    real = rng.standard_normal((n, d)) @ np.diag([5, 3, 2, 1, 0.5, 0.3, 0.1, 0.05]) @ np.linalg.qr(
        rng.standard_normal((d, d)))[0] + 4.0
    rand = rng.standard_normal((n, d)) * 0.7 + 1.0  # near-isotropic, like a random-init network's
    src = as_sources([real.astype(np.float32), rand.astype(np.float32)])
    rows = np.arange(0, n, 2)
    floor = spectrum_matched(src[1], src[0], rows)
    mu_w, C_w = moments(floor, rows)
    mu_a, C_a = moments(src[0], rows)
    np.testing.assert_allclose(C_w, C_a, rtol=1e-3, atol=1e-3 * np.abs(C_a).max())
    np.testing.assert_allclose(np.linalg.eigvalsh(C_w), np.linalg.eigvalsh(C_a), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mu_w, mu_a, atol=1e-3)
    # its batches are the base source's batches, mapped: the rows stay aligned with the other model's
    b_floor = next(floor.batches(32, seed=3, rows=rows))
    b_base = next(src[1].batches(32, seed=3, rows=rows))
    torch.testing.assert_close(b_floor, b_base @ floor.W + floor.b)
    assert isinstance(floor.base, ArraySource) and len(as_sources([floor, src[0]])) == 2
    with pytest.raises(SaematchError, match="same units, same width"):
        spectrum_matched(src[1], as_sources([real[:, :4].astype(np.float32)] * 2)[0], rows)
