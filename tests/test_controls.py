"""Controls and calibration on the tiny models: random-init built offline, control nodes in the graph,
readouts recomputed independently from the artifacts, and kill -9 during a control's SAE training."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_run, write_config
from saematch.config import load_config
from saematch.graph.plan import build_plan
from saematch.runs import run


def test_random_init_is_built_offline_from_the_config(tiny_dir, tmp_path, monkeypatch):
    from saematch.adapter import load_model, load_random_init

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    real = load_model(str(tiny_dir / "llama"), tmp_path, "float32")
    r1 = load_random_init(str(tiny_dir / "llama"), tmp_path, seed=7, dtype="float32")
    r2 = load_random_init(str(tiny_dir / "llama"), tmp_path, seed=7, dtype="float32")
    r3 = load_random_init(str(tiny_dir / "llama"), tmp_path, seed=8, dtype="float32")
    w = lambda a: a.model.model.layers[0].mlp.up_proj.weight  # noqa: E731
    assert r1.n_layers == real.n_layers and r1.d_model == real.d_model  # the same architecture
    assert torch.equal(w(r1), w(r2)) and not torch.equal(w(r1), w(r3))  # seeded
    assert not torch.allclose(w(r1), w(real))  # not the trained (here: saved) weights
    ids = torch.randint(0, 300, (2, 16))
    acts = r1.resid_post(ids, [0, 2])
    assert acts[2].shape == (2, 16, real.d_model) and torch.isfinite(acts[2]).all()


def cfg_for(tiny_dir, run_dir, **extra):
    return {
        **tiny_run(tiny_dir, run_dir.parent, [0, 3], [1, 2], 2500),
        "run_dir": str(run_dir),
        "extract": {"batch_size": 2, "dtype": "float32", "shard_units": 128},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 8192, "batch_size": 128, "loss_windows": 0,
                "checkpoint_every": 8, "threads": 1},
        "similarity": {"n_permutations": 10, "n_bootstrap": 0, "max_units": 200, "max_pairs": 100, "workers": 1},
        "calibration": {"n_bootstrap": 10},
        **extra,
    }


def test_plan_declares_every_control(tiny_dir, tmp_path):
    plan = build_plan(load_config(write_config(tmp_path / "c.yaml", cfg_for(tiny_dir, tmp_path / "run"))))
    ids = set(plan.nodes)
    assert {"extract:llama@random", "train:llama@seed1:0", "train:gpt2@seed1:2", "train:llama@random:3"} <= ids
    assert {"match:llama@random:0:gpt2:1", "match:llama:0:gpt2@random:1", "match:gpt2:1:gpt2@seed1:1",
            "match:llama@embed:0:gpt2:2", "match:llama:3:gpt2@embed:0", "train:gpt2@embed:0", "corpus:split"} <= ids
    assert not any("@shuffle" in n for n in ids)  # a reference, off by default: never a floor
    off = build_plan(load_config(write_config(tmp_path / "d.yaml", cfg_for(
        tiny_dir, tmp_path / "run", controls={"seed": False, "random_init": False, "embed": False}))))
    assert not any("@" in n for n in off.nodes)
    assert plan.hashes["train:llama:0"] == off.hashes["train:llama:0"]  # controls never invalidate the main nodes


@pytest.fixture(scope="module")
def reference(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctl")
    path = write_config(tmp / "c.yaml", cfg_for(tiny_dir, tmp / "run"))
    res = run(path)
    return tmp / "run", res


def test_readouts_recompute_from_the_artifacts(reference):
    run_dir, res = reference
    r = pd.read_parquet(run_dir / "calibration" / "readouts.parquet")
    row = r[(r.readout == "matched-corr") & (r.layer_a == 3) & (r.layer_b == 2)].iloc[0]
    main = pd.read_parquet(run_dir / "pairs" / "llama_L03__gpt2_L02" / "pairs.parquet")
    floor = pd.read_parquet(run_dir / "controls" / "pairs" / "llama@random_L03__gpt2_L02" / "pairs.parquet")
    twin_a = pd.read_parquet(run_dir / "controls" / "pairs" / "llama_L03__llama@seed1_L03" / "pairs.parquet")
    twin_b = pd.read_parquet(run_dir / "controls" / "pairs" / "gpt2_L02__gpt2@seed1_L02" / "pairs.parquet")
    floors = {name: np.nanmean(pd.read_parquet(run_dir / "controls" / "pairs" / f / "pairs.parquet")["correlation"])
              for name, f in (("random_a", "llama@random_L03__gpt2_L02"), ("random_b", "llama_L03__gpt2@random_L02"),
                              ("embed_a", "llama@embed_L00__gpt2_L02"), ("embed_b", "llama_L03__gpt2@embed_L00"))}
    assert np.nanmean(floor["correlation"]) == pytest.approx(floors["random_a"])
    assert row["score"] == pytest.approx(np.nanmean(main["correlation"]))
    assert row["floor_random"] == pytest.approx(max(floors["random_a"], floors["random_b"]))
    assert row["floor_token"] == pytest.approx(max(floors["embed_a"], floors["embed_b"]))
    assert row["floor"] == pytest.approx(max(floors.values())) and row["floor_kind"] == max(floors, key=floors.get)
    # the ceiling pools both models' seed twins: the mean of their mean held-out correlations
    assert row["ceiling"] == pytest.approx(0.5 * (np.nanmean(twin_a["correlation"]) + np.nanmean(twin_b["correlation"])))
    assert row["calibrated"] == pytest.approx((row["score"] - row["floor"]) / (row["ceiling"] - row["floor"]))
    mk = r[r.readout == "mknn"]
    assert mk["ceiling"].isna().all()  # no ceiling of 1 by construction: floor-adjusted instead
    assert (mk["calibrated"] - (mk["score"] - mk["floor"]) / (1 - mk["floor"])).abs().max() < 1e-9
    uni = pd.read_parquet(run_dir / "calibration" / "universality.parquet")
    assert len(uni) == sum(len(pd.read_parquet(p)) for p in (run_dir / "pairs").glob("*/pairs.parquet"))
    assert "matched-corr" in res.calibrated["readouts"]


def test_kill_during_a_controls_sae_training_then_rerun(tiny_dir, tmp_path, reference):
    ref_dir, _ = reference
    path = write_config(tmp_path / "c.yaml", cfg_for(tiny_dir, tmp_path / "run"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "saematch.cli", "run", str(path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    killed = False
    for line in proc.stderr:
        if "SAE llama@seed1/L0" in line:  # the first twin is done; the next control SAE is training
            time.sleep(1.0)
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait()
    assert killed
    assert run(path).built  # resumes
    key = ["readout", "layer_a", "layer_b"]
    a = pd.read_parquet(ref_dir / "calibration" / "readouts.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "run" / "calibration" / "readouts.parquet").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
