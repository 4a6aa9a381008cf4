"""Crosscoder: planted shared/private features, save/load, kill -9 resume, agreement with Hungarian pairs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from saematch.crosscoder import (
    CrosscoderConfig,
    agreement_table,
    analyse_crosscoder,
    latent_activations,
    load_crosscoder,
    train_crosscoder,
)
from saematch.crosscoder.planted import D_A, D_B, PRIV_A, PRIV_B, SHARED, planted  # noqa: F401 (used by other tests)
from saematch.errors import ArtifactError, ConfigError, SaematchError

CFG = CrosscoderConfig(expansion=2, k=2, lr=3e-3, training_tokens=150_000, batch_size=256, checkpoint_every=1000,
                       log_every=50, seed=0, decoder_penalty=0.03)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    xA, xB, GA, GB = planted()
    out = tmp_path_factory.mktemp("cc")
    res = train_crosscoder([xA, xB], CFG, out, names=["A", "B"])
    an = analyse_crosscoder(res.crosscoder, [xA, xB], CFG, out=out / "analysis")
    return res, an, (xA, xB, GA, GB), out


def _matches(cc, GA: np.ndarray, GB: np.ndarray) -> list[tuple[str, int, float]]:
    """(planted class, best latent, cosine) per planted feature, by decoder cosine in the model that has it."""
    out = []
    for m, G, feats in ((0, GA, range(SHARED + PRIV_A)), (1, GB, range(SHARED, SHARED + PRIV_B))):
        W = cc.W_dec[m].detach().double().numpy()
        C = (W / np.linalg.norm(W, axis=1, keepdims=True)) @ G.T
        for j in feats:
            truth = "shared" if j < SHARED else ("a_only" if m == 0 else "b_only")
            out.append((truth, int(C[:, j].argmax()), float(C[:, j].max())))
    return out


def test_planted_split_is_recovered(trained):
    res, an, (xA, xB, GA, GB), _ = trained
    cc = res.crosscoder
    assert [w.shape for w in cc.W_dec] == [(2 * D_B, D_A), (2 * D_B, D_B)]  # each model its own d_model
    assert res.steps == CFG.steps and res.resumed_from == 0
    matches = _matches(cc, GA, GB)
    cls = an.latents.set_index("latent")["class"]
    correct = [cls[lat] == truth for truth, lat, _ in matches]
    assert np.mean(correct) >= 0.9, f"{np.mean(correct):.2f} of planted features correctly classed"
    # inputs scaled by centred variance: B's 3x scale and A's offset do not move a shared latent off 0.5
    rel = an.latents.set_index("latent")["rel_norm"]
    assert np.median([abs(rel[lat] - 0.5) for truth, lat, _ in matches if truth == "shared"]) < 0.05
    assert np.median([c for _, _, c in matches]) > 0.95  # the dictionary found the planted directions
    assert an.summary["fvu_a"] < 0.05 and an.summary["fvu_b"] < 0.05  # held-out reconstruction
    recon = cc.reconstruct([torch.from_numpy(xA[-500:]), torch.from_numpy(xB[-500:])])
    assert recon[1].shape == (500, D_B)  # model units in and out
    assert float(((recon[1] - torch.from_numpy(xB[-500:])) ** 2).sum() / ((xB[-500:] - xB[-500:].mean(0)) ** 2).sum()) < 0.05


def test_latent_scaling_and_firing_separate_shared_from_exclusive(trained):
    res, an, (_, _, GA, GB), out = trained
    df = an.latents.set_index("latent")
    np.testing.assert_allclose(df["beta_a"], df["beta_err_a"] + df["beta_rec_a"], rtol=1e-9, equal_nan=True)
    by = {truth: df.loc[sorted({lat for t, lat, c in _matches(res.crosscoder, GA, GB) if t == truth and c > 0.9})]
          for truth in ("shared", "a_only", "b_only")}
    excl = pd.concat([by["a_only"], by["b_only"]])
    # a planted exclusive feature is absent from the other model: its Latent Scaling ratio is near 0
    assert excl["nu"].abs().median() < 0.3 and not excl["suspect_exclusive"].all()
    # a shared one is present in both: nu tracks the ratio of decoder norms
    shared = by["shared"]
    ratio = np.minimum(shared["norm_a"], shared["norm_b"]) / np.maximum(shared["norm_a"], shared["norm_b"])
    assert np.median(np.abs(shared["nu"] - ratio)) < 0.2
    assert shared["firing_entropy"].median() > excl["firing_entropy"].median()
    assert shared["cofire"].median() > 0.5 > excl["cofire"].median()
    assert shared["cos_mapped"].median() > 0.5
    saved = pd.read_parquet(out / "analysis" / "latents.parquet")
    assert len(saved) == res.crosscoder.d_latent and json.loads((out / "analysis" / "analysis.json").read_text())["n_live"] > 0


def test_save_load_round_trip(trained, tmp_path):
    res, _, (xA, xB, _, _), out = trained
    back = load_crosscoder(out)
    assert back.d_models == [D_A, D_B] and back.names == ["A", "B"]
    for k, v in res.crosscoder.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    xs = [torch.from_numpy(xA[:300]), torch.from_numpy(xB[:300])]
    assert torch.equal(res.crosscoder.encode(xs), back.encode(xs))
    assert not (out / "checkpoint.safetensors").exists()
    (tmp_path / "cfg.json").write_text((out / "cfg.json").read_text())
    (tmp_path / "crosscoder.safetensors").write_bytes((out / "crosscoder.safetensors").read_bytes()[:100])
    with pytest.raises(ArtifactError):
        load_crosscoder(tmp_path)


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from saematch.crosscoder import CrosscoderConfig, train_crosscoder

    class Slow:  # stretches training so the parent can kill it mid-run
        def log(self, metrics):
            time.sleep(float(sys.argv[2]))

    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((3000, 12)).astype(np.float32), rng.standard_normal((3000, 20)).astype(np.float32)
    xb[:, :12] += 2 * xa
    cfg = CrosscoderConfig(expansion=2, k=4, lr=1e-3, training_tokens=64 * 120, batch_size=64, checkpoint_every=7,
                           log_every=1, dead_window=640, decoder_penalty=0.03)
    res = train_crosscoder([xa, xb], cfg, Path(sys.argv[1]), logger=Slow())
    print(json.dumps({"resumed_from": res.resumed_from, "steps": res.steps}))
""")


def _child(script: Path, out: Path, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(sleep)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill9_resume_gives_identical_weights(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p_ref = _child(script, ref, 0.0)
    p = _child(script, killed, 0.05)
    deadline = time.time() + 60
    while not (killed / "checkpoint.safetensors").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more steps, possibly mid-step
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL and not (killed / "crosscoder.safetensors").exists()
    assert (killed / "checkpoint.safetensors").exists()
    out_ref, err = p_ref.communicate(timeout=120)
    assert p_ref.returncode == 0, err
    p2 = _child(script, killed, 0.0)
    out2, err2 = p2.communicate(timeout=120)
    assert p2.returncode == 0, err2
    assert json.loads(out2.strip().splitlines()[-1])["resumed_from"] > 0
    a, b = load_file(str(ref / "crosscoder.safetensors")), load_file(str(killed / "crosscoder.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_agreement_finds_hungarian_pairs():
    from saematch.matching.assign import hungarian_dense
    from saematch.matching.correlation import dense_corr

    rng = np.random.default_rng(3)
    n, f = 4000, 30
    Z = sp.random(n, f, density=0.05, random_state=4, data_rvs=lambda k: rng.uniform(0.5, 2, k), format="csr")
    pa, pb = rng.permutation(f), rng.permutation(f)  # SAE A's feature pa[j] and B's pb[j] are latent j
    noise = lambda: sp.random(n, f, density=0.002, random_state=int(rng.integers(1 << 30)), format="csr")  # noqa: E731
    XA = (Z[:, np.argsort(pa)] + noise()).tocsr()
    XB = (Z[:, np.argsort(pb)] * 2.0 + noise()).tocsr()
    asg = hungarian_dense(dense_corr(XA, XB)[0])
    pairs = pd.DataFrame({"feature_a": asg.rows, "feature_b": asg.cols, "correlation": asg.values})
    latents = np.arange(0, f, 2)
    df, summ = agreement_table(Z, XA, XB, pairs, latents, n_top=10)
    assert (df["feature_a"].to_numpy() == pa[latents]).all() and (df["feature_b"].to_numpy() == pb[latents]).all()
    assert df["is_hungarian_pair"].all() and summ["hungarian_pair_fraction"] == 1.0
    assert (df["corr_a"] > 0.9).all() and (df["jaccard_ab"] > 0.8).all()
    shuffled = pairs.assign(feature_b=np.roll(pairs["feature_b"].to_numpy(), 1))  # a wrong pairing
    df2, summ2 = agreement_table(Z, XA, XB, shuffled, latents, n_top=10)
    assert summ2["hungarian_pair_fraction"] == 0.0 and (df2["jaccard_pair"] < 0.5).all()


def test_latent_activations_match_encode(trained):
    res, _, (xA, xB, _, _), _ = trained
    Z = latent_activations(res.crosscoder, [xA[:700], xB[:700]], batch=256)
    dense = res.crosscoder.encode([torch.from_numpy(xA[:700]), torch.from_numpy(xB[:700])]).numpy()
    assert Z.shape == dense.shape
    np.testing.assert_allclose(Z.toarray(), dense, rtol=1e-6)


def test_bad_inputs_raise_one_readable_error(tmp_path):
    with pytest.raises(ConfigError, match="shared_low"):
        CrosscoderConfig(shared_low=0.9, shared_high=0.1)
    with pytest.raises(SaematchError, match="different unit counts"):
        train_crosscoder([np.zeros((100, 4), np.float32), np.zeros((90, 6), np.float32)], CFG, tmp_path)
    with pytest.raises(SaematchError, match="at least two models"):
        train_crosscoder([np.zeros((100, 4), np.float32)], CFG, tmp_path)


def test_store_batches_stay_aligned(tmp_path):
    from saematch.activations.store import finish_layer, write_shard
    from saematch.crosscoder.data import aligned_batches, as_sources

    rng = np.random.default_rng(5)
    xa = torch.from_numpy(rng.standard_normal((1000, 6)).astype(np.float32))
    xb = torch.cat([2 * xa, torch.ones(1000, 3)], 1)  # row i of B is a function of row i of A
    for name, x in (("a", xa), ("b", xb)):
        for k in range(4):  # shards of 300 rows, the last one short
            write_shard(tmp_path / name, k, x[300 * k:300 * (k + 1)].to(torch.bfloat16))
        finish_layer(tmp_path / name, "", 1000, 300, d_model=x.shape[1], dtype="bfloat16")
    stores = as_sources([tmp_path / "a", tmp_path / "b"])
    rows = np.setdiff1d(np.arange(1000), np.arange(100, 250))  # crosses a shard boundary, skips units
    it = aligned_batches(stores, 64, rows, seed=2, scales=[1.0, 1.0], skip=3)
    skipped = xa[100:250].to(torch.bfloat16).float()
    for _ in range(30):  # crosses epochs and shard boundaries
        a, b = next(it)
        assert torch.equal(b[:, :6], 2 * a)
        assert not (a[:, None, :] == skipped[None]).all(-1).any()  # no row of the skipped units
