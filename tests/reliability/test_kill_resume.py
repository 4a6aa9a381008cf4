"""kill -9 a real `saematch run` in each stage; the rerun ends with identical scores."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import tiny_run, write_config


def tiny_cfg(tiny_dir, run_dir):
    return {
        **tiny_run(tiny_dir, run_dir.parent, [0, 3], [1, 2], 2500),
        "run_dir": str(run_dir),
        "extract": {"batch_size": 2, "dtype": "float32", "shard_units": 128},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 8192, "batch_size": 128, "loss_windows": 2,
                "checkpoint_every": 8, "threads": 1},
        "similarity": {"n_permutations": 20, "n_bootstrap": 0, "max_units": 200, "max_pairs": 100},
    }


def run_cli(cfg_path, kill_at=None, delay=0.0):
    """Run `saematch run`; with kill_at, SIGKILL it ``delay`` s after that stage starts."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "saematch.cli", "run", str(cfg_path)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    if kill_at is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        return True
    for line in proc.stderr:
        if f"stage {kill_at} ..." in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait()
    return False  # finished before reaching the stage


def scores(run_dir):
    df = pd.read_parquet(run_dir / "similarity" / "scores.parquet")
    return df.sort_values(["metric", "layer_a", "layer_b"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tiny_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    path = write_config(run.parent / "c.yaml", tiny_cfg(tiny_dir, run))
    run_cli(path)
    return scores(run)


@pytest.mark.parametrize("stage, delay", [("extract", 2.0), ("train", 3.0), ("match", 1.0), ("compare", 1.0)])
def test_kill_and_resume(tiny_dir, tmp_path, reference, stage, delay):
    run = tmp_path / "run"
    path = write_config(tmp_path / "c.yaml", tiny_cfg(tiny_dir, run))
    killed = run_cli(path, kill_at=stage, delay=delay)
    assert killed
    run_cli(path)
    pd.testing.assert_frame_equal(scores(run), reference)


def test_truncated_artifacts_are_rebuilt(tiny_dir, tmp_path, reference):
    run = tmp_path / "run"
    path = write_config(tmp_path / "c.yaml", tiny_cfg(tiny_dir, run))
    run_cli(path)
    shard = run / "acts" / "llama" / "layer_00" / "shard_00001.safetensors"
    pairs = next((run / "pairs").glob("*/pairs.parquet"))
    sae = run / "saes" / "gpt2" / "layer_02" / "sae_weights.safetensors"
    for f in (shard, pairs, sae):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    run_cli(path)
    for f in (shard, pairs, sae):
        assert f.stat().st_size > 0
    from saematch.activations import open_layer

    open_layer(shard.parent)  # digests match again
    pd.testing.assert_frame_equal(scores(run), reference)
