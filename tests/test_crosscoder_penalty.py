"""Crosscoder decoder-norm penalty (Lindsey et al. 2024) and input scaling: on noisy planted data, MSE alone
leaves part of a private feature's latent in the other model's decoder; the penalty drives it to 0, so the
private features are classed exclusive while the shared ones stay at 0.5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saematch.crosscoder import CrosscoderConfig, analyse_crosscoder, train_crosscoder
from saematch.crosscoder.data import ArraySource, input_stats
from saematch.crosscoder.model import Crosscoder
from saematch.crosscoder.train import decoder_penalty, n_train_rows
from saematch.errors import ArtifactError, ConfigError
from test_crosscoder import _matches, planted

SIGMA = 0.45  # per-dimension noise: about 45% of A's variance and 55% of B's are unstructured


def noisy(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xA, xB, GA, GB = planted(seed=seed)
    rng = np.random.default_rng(seed + 100)
    xA = xA + SIGMA * rng.standard_normal(xA.shape)
    xB = xB + 3 * SIGMA * rng.standard_normal(xB.shape)  # B is 3x A's scale
    return xA.astype(np.float32), xB.astype(np.float32), GA, GB


def _fit(penalty: float, data, tmp_path) -> tuple[float, float, float, float]:
    """(fraction classed correctly, median distance of a private feature's latent to 0/1, median |rel - 0.5|
    of a shared one, median Latent Scaling nu of the private ones)."""
    xA, xB, GA, GB = data
    cfg = CrosscoderConfig(expansion=2, k=2, lr=3e-3, training_tokens=300_000, batch_size=256,
                           checkpoint_every=10_000, log_every=100, decoder_penalty=penalty)
    res = train_crosscoder([xA, xB], cfg, tmp_path / f"p{penalty}")
    df = analyse_crosscoder(res.crosscoder, [xA, xB], cfg).latents.set_index("latent")
    m = _matches(res.crosscoder, GA, GB)
    assert np.median([c for *_, c in m]) > 0.95  # the dictionary found the planted directions
    correct = np.mean([df["class"][lat] == truth for truth, lat, _ in m])
    private = np.array([df["rel_norm"][lat] for t, lat, _ in m if t != "shared"])
    shared = np.array([df["rel_norm"][lat] for t, lat, _ in m if t == "shared"])
    nu = np.array([df["nu"][lat] for t, lat, _ in m if t != "shared"])
    return (float(correct), float(np.median(np.minimum(private, 1 - private))), float(np.median(np.abs(shared - 0.5))),
            float(np.median(nu)))


def test_penalty_makes_private_features_exclusive(tmp_path):
    data = noisy()
    plain = _fit(0.0, data, tmp_path)
    pen = _fit(0.1, data, tmp_path)
    assert pen[0] >= 0.9, f"{pen[0]:.2f} of planted features correctly classed with the penalty"
    # the other model's decoder of a private latent goes to ~0 with the penalty, not without it
    assert pen[1] < 0.03 and pen[1] < 0.3 * plain[1], (plain, pen)
    assert plain[1] > 0.04, plain  # MSE alone leaves weak decoders (the demo's problem)
    assert pen[2] < 0.05  # shared latents stay at 0.5: the penalty does not split them
    assert abs(pen[3]) < 0.1  # Latent Scaling: the other model really does not carry them


def test_decoder_penalty_value_and_pull():
    cc = Crosscoder([3, 5], 4, k=1)
    cc.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        cc.W_dec[1][2].mul_(0.5)
    f = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    norms = cc.dec_norms().sum(1).detach()
    want = (f * norms.detach()).sum(1).mean() / cc.variance ** 0.5
    assert float(decoder_penalty(cc, f).detach()) == pytest.approx(float(want), rel=1e-6)
    t = decoder_penalty(cc, f, tanh=2.0).detach()
    assert float(t) == pytest.approx(float(torch.tanh(2.0 * f * norms / cc.variance ** 0.5).sum(1).mean()), rel=1e-6)
    assert float(t) < 2.0  # at most one per active latent and unit, averaged
    decoder_penalty(cc, f).backward()
    g = cc.W_dec[1].grad
    # the gradient of ||d|| is d/||d||: every used decoder row is pulled straight toward 0, unused ones not at all
    cos = torch.nn.functional.cosine_similarity(g[2], cc.W_dec[1][2].detach(), dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-5) and float(g[3].abs().sum()) == 0.0


def test_inputs_are_scaled_by_centred_variance(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 6)) * np.array([1, 2, 3, 1, 1, 1]) + 50.0  # a mean far larger than the spread
    var, mean = input_stats(ArraySource(torch.from_numpy(x.astype(np.float32))), np.arange(4000))
    assert var == pytest.approx(float(((x - x.mean(0)) ** 2).sum(1).mean()), rel=1e-3)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-4)
    with pytest.raises(ArtifactError, match="do not vary"):
        input_stats(ArraySource(torch.ones(100, 4)), np.arange(100))
    y = 10 * rng.standard_normal((4000, 9)) - 3.0
    cfg = CrosscoderConfig(expansion=1, k=2, training_tokens=256, batch_size=256, decoder_penalty=0.0)
    cc = train_crosscoder([x.astype(np.float32), y.astype(np.float32)], cfg, tmp_path).crosscoder
    for m, a in enumerate((x, y)):  # every model has total variance D around its mean, in scaled units
        s = a[:n_train_rows(len(a), cfg)] * float(cc.scale[m])
        assert ((s - s.mean(0)) ** 2).sum(1).mean() == pytest.approx(cc.variance, rel=1e-3)


def test_penalty_config_is_checked():
    with pytest.raises(ConfigError, match="decoder_penalty"):
        CrosscoderConfig(decoder_penalty=-0.1)
    with pytest.raises(ConfigError, match="decoder_penalty_tanh"):
        CrosscoderConfig(decoder_penalty_tanh=-1.0)
