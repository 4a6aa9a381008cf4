"""The device path (issue 16), run on the CPU with ``device=cpu`` and on CUDA where present: the device
setting, the TopK kernels, the training feed, the in-RAM layer, and rank-split jobs under torchrun."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_run, write_config
from saematch.activations.store import finish_layer, open_layer, write_shard
from saematch.config import load_config
from saematch.devices import resolve, stage_device
from saematch.errors import ConfigError
from saematch.jobs import rank_share
from saematch.sae import kernels
from saematch.sae.feed import Prefetcher

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_device_setting_resolves_and_refuses_clearly(monkeypatch, tmp_path):
    assert resolve("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == "cpu"
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        resolve("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun, cuda means the rank's own GPU
    assert resolve("auto") == resolve("cuda") == "cuda:1" and resolve("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="sees 2 GPU"):
        resolve("cuda:2")
    base = {"models": [{"name": "a", "layers": [1]}, {"name": "b", "layers": [2]}]}
    with pytest.raises(ConfigError, match="sae.device: 'gpu' is not a device"):
        load_config(write_config(tmp_path / "c.yaml", {**base, "sae": {"device": "gpu"}}))
    cfg = load_config(write_config(tmp_path / "d.yaml", {**base, "device": "cpu", "sae": {"device": "cuda:0"}}))
    assert stage_device(cfg, "features") == "cpu" and stage_device(cfg, "sae") == "cuda:0"  # per-stage override


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_and_dense_kernels_agree(device):
    g = torch.Generator().manual_seed(0)
    B, k, d_in, d_sae = 48, 6, 20, 90
    idx = torch.stack([torch.randperm(d_sae, generator=g)[:k] for _ in range(B)]).to(device)
    x = torch.randn(B, d_in, generator=g).to(device)
    w = torch.rand(B, k, generator=g).to(device)
    outs = {}
    for kern in kernels.KERNELS:
        W = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(1)).to(device).requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        y = kernels.decode(kern, idx, ww, W)
        (y * torch.arange(d_in, device=device)).sum().backward()
        outs[kern] = (y.detach(), W.grad, ww.grad, *kernels.encoder_grad(kern, x, idx, w, d_sae))
    # independent formula: the dense [B, d_sae] matrix
    A = torch.zeros(B, d_sae, device=device).scatter_(1, idx, w)
    W0 = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(1)).to(device)
    expected = {0: A @ W0, 3: x.t() @ A, 4: A.sum(0)}  # decode, encoder weight and bias gradients
    for kern, got in outs.items():
        for i, want in expected.items():
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    for a, b in zip(outs["sparse"], outs["dense"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    choice = kernels.choose("auto", device, 64, 4, 16, 64)
    assert set(choice) == {"decode", "encoder_grad"} and set(choice.values()) <= set(kernels.KERNELS)
    assert kernels.choose("auto", device, 64, 4, 16, 64) is choice  # timed once per device and shape
    assert kernels.choose("dense", device, 64, 4, 16, 64) == {"decode": "dense", "encoder_grad": "dense"}


def _store(tmp_path, n=1000, d=8, shard=128):
    x = torch.randn(n, d)
    for s in range(-(-n // shard)):
        write_shard(tmp_path, s, x[s * shard:(s + 1) * shard].to(torch.bfloat16))
    finish_layer(tmp_path, "", n, shard, d_model=d, dtype="bfloat16")
    return open_layer(tmp_path)


def test_layer_in_ram_and_prefetch_feed_give_the_same_batches(tmp_path, monkeypatch):
    store = _store(tmp_path)
    bare = store.batches(64, 0, 900, seed=3, scale=2.0, skip=5)
    ref = [next(bare) for _ in range(40)]  # ~3 epochs over 900 rows
    reads = []
    real = store.shard
    monkeypatch.setattr(type(store), "shard", lambda self, k: reads.append(k) or real(k))
    with Prefetcher(store.batches(64, 0, 900, seed=3, scale=2.0, skip=5, in_memory=True), "cpu", depth=3) as feed:
        got = [next(feed) for _ in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert len(reads) == len({r for r in reads}) == 8  # the second and third epochs read no file
    assert feed.n == 40 and feed.wait_s >= 0


def test_prefetch_feed_raises_the_source_error_and_stops():
    def source():
        yield torch.zeros(2)
        raise ValueError("torn shard")

    feed = Prefetcher(source(), "cpu")
    assert torch.equal(next(feed), torch.zeros(2))
    with pytest.raises(ValueError, match="torn shard"):
        next(feed)
    with Prefetcher(iter([torch.ones(1)] * 3), "cpu", depth=1) as short:
        assert len(list(short)) == 3
    endless = Prefetcher(iter(lambda: torch.ones(1), None), "cpu", depth=2)
    next(endless)
    endless.close()
    assert not endless._thread.is_alive()


def test_rank_share_partitions_the_jobs():
    jobs = list(range(11))
    shares = [rank_share(jobs, r, 4) for r in range(4)]
    assert shares[1] == [1, 5, 9] and sorted(sum(shares, [])) == jobs
    with pytest.raises(Exception, match="not in"):
        rank_share(jobs, 4, 4)


@pytest.fixture(scope="module")
def extracted(tiny_dir, tmp_path_factory):
    from saematch.runs import run

    tmp = tmp_path_factory.mktemp("ranks")
    cfg = tiny_run(tiny_dir, tmp, [0, 3], [1], 3000, device="cpu", extract={"dtype": "float32", "shard_units": 256},
                   sae={"expansion": 2, "k": 4, "training_tokens": 1024, "batch_size": 256, "loss_windows": 0,
                        "threads": 1})
    path = write_config(tmp / "c.yaml", cfg)
    run(path, ("extract",))
    return path


def test_train_jobs_split_over_torchrun_ranks(extracted):
    """Two torchrun ranks on the CPU build disjoint shares of the train nodes; together, all of them."""
    from saematch.runs import status

    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed with torch here")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "saematch.jobs", str(extracted),
                          "--stage", "train", "--build"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    done = [line.split(": ", 1) for line in out.stdout.splitlines() if line.endswith(" done")]
    by_rank = {r: {n.removesuffix(" done") for rr, n in done if rr == r} for r in ("rank 0", "rank 1")}
    assert by_rank["rank 0"] and by_rank["rank 1"] and not by_rank["rank 0"] & by_rank["rank 1"]
    train = {s.node for s in status(extracted) if s.stage == "train"}
    assert by_rank["rank 0"] | by_rank["rank 1"] == train
    assert all(s.state == "done" for s in status(extracted) if s.stage == "train")
    man = __import__("json").loads(next((Path(load_config(extracted).run_dir) / "saes").rglob("manifest.json")).read_text())
    assert man["training"]["device"] == "cpu" and set(man["training"]["kernels"]) == {"decode", "encoder_grad"}


def test_rank_refuses_unbuilt_inputs(tiny_dir, tmp_path):
    from saematch.jobs import run_rank

    cfg = tiny_run(tiny_dir, tmp_path, [0], [1], 800)
    with pytest.raises(Exception, match="inputs of the train stage are not built"):
        run_rank(load_config(write_config(tmp_path / "c.yaml", cfg)), "train", 1, 2)
    assert not np.any([p.name == "manifest.json" for p in (tmp_path / "run").rglob("*")])
