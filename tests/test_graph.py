"""The pipeline graph: one manifest check per node, force/only semantics, status, the hashing policy,
registries and the public API."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import saematch
from conftest import tiny_run, write_config
from saematch.cli import main
from saematch.config import load_config
from saematch.errors import ConfigError
from saematch.graph.plan import build_plan
from saematch.runs import executor_for, run, status


@pytest.fixture(scope="module")
def tiny(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    cfg = tiny_run(tiny_dir, tmp, [0, 3], [1], 3000, extract={"dtype": "float32", "shard_units": 256},
                   sae={"expansion": 2, "k": 4, "training_tokens": 2048, "batch_size": 256, "loss_windows": 0},
                   similarity={"n_permutations": 5, "n_bootstrap": 0, "max_units": 200, "max_pairs": 100})
    path = write_config(tmp / "c.yaml", cfg)
    first = run(path)
    return path, first


def manifests(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("manifest.json")}


def test_each_node_is_built_once_then_checked_once(tiny):
    path, first = tiny
    plan = build_plan(load_config(path))
    assert sorted(first.built) == sorted(plan.nodes)  # every node built exactly once in one process
    again = run(path)
    assert again.built == () and again.checks == len(plan.nodes)  # one manifest check per node, nothing rebuilt


def test_status_lists_every_node(tiny, capsys):
    path, _ = tiny
    states = status(path)
    assert {s.node for s in states} == set(build_plan(load_config(path)).nodes)
    assert all(s.state == "done" for s in states)
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "match:llama:0:gpt2:1" in out and f"{len(states)} done" in out
    # a changed config makes exactly the downstream nodes stale, and says why
    states = {s.node: s for s in status(path, ["features.dense_threshold=0.2"])}
    assert states["train:llama:0"].state == "done"  # a reporting threshold never retrains SAEs
    assert states["features:llama:0"].state == "stale" and "config changed" in states["features:llama:0"].reason


def test_force_train_redoes_saes_and_after_and_nothing_before(tiny):
    path, _ = tiny
    run_dir = Path(load_config(path).run_dir)
    before = manifests(run_dir)
    res = run(path, force="train")
    after = manifests(run_dir)
    changed = {k for k in before if after[k] != before[k]}
    assert not any(k.startswith(("corpus", "acts")) for k in changed)
    for prefix in ("saes/", "features/", "pairs/", "controls/", "similarity/", "calibration/", "report/"):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert {n.split(":")[0] for n in res.built} == {"train", "features", "match", "compare", "calibrate", "report"}


def test_only_selects_nodes_and_force_outside_targets_invalidates(tiny):
    path, _ = tiny
    res = run(path, stages=("train",), force="train", only="llama:3")
    assert res.built == ("train:llama:3",)
    states = {s.node: s.state for s in status(path)}
    assert states["features:llama:3"] == "missing" and states["features:llama:0"] == "done"  # rebuilt when next needed
    assert run(path).built[0] == "features:llama:3"
    with pytest.raises(ConfigError, match="MODEL:LAYER"):
        run(path, only="llama")


def test_hashing_policy(tiny, tmp_path):
    path, _ = tiny
    base = build_plan(load_config(path)).hashes

    def changed(*overrides):
        h = build_plan(load_config(path, list(overrides))).hashes
        return {k for k in base if h[k] != base[k]}

    assert changed("features.encode_batch=7", "extract.batch_size=3", "sae.threads=1", "similarity.workers=1",
                   "sae.checkpoint_every=3", "extract.device=cuda:1", "device=cpu", "sae.device=cuda",
                   "features.device=cpu", "matching.device=cpu", "sae.kernel=dense", "sae.feed_in_ram=false", "sae.prefetch=2") == set()
    assert "train:llama:0" in changed("sae.autocast=true")  # bf16 products change the result
    assert changed("features.dense_threshold=0.3") == {n for n in base if n.split(":")[0] in
                                                       ("features", "match", "compare", "calibrate", "report")}
    assert changed("sae.lr=0.01") >= {"train:llama:0", "compare"} and "extract:llama" not in changed("sae.lr=0.01")
    concepts = tmp_path / "concepts.yaml"
    concepts.write_text("war: [war, army]\n")
    with_file = build_plan(load_config(path, [f"similarity.concepts={concepts}"])).hashes
    concepts.write_text("war: [war, army, navy]\n")  # same path, new content: the compare node is stale
    assert build_plan(load_config(path, [f"similarity.concepts={concepts}"])).hashes["compare"] != with_file["compare"]


def test_architecture_parameters_and_registry_errors(tmp_path):
    base = {"models": [{"name": "a", "layers": [1]}, {"name": "b", "layers": [2]}]}
    p = write_config(tmp_path / "c.yaml", {**base, "sae": {"architecture": "jumprelu", "l0_coefficient": 2.0}})
    cfg = load_config(p)
    assert type(cfg.sae).__name__ == "JumpReLUSAEConfig" and cfg.sae.max_active(100) is None
    with pytest.raises(ConfigError, match=r"unknown config key 'sae.k' for architecture 'jumprelu'"):
        load_config(p, ["sae.k=32"])
    with pytest.raises(ConfigError, match="unknown SAE architecture 'gated'"):
        load_config(p, ["sae.architecture=gated"])
    with pytest.raises(ConfigError, match="has no parameter 'k'"):
        build_plan(load_config(p, ["similarity.metric_params={svcca: {k: 5}}"]))
    from saematch.registry import METRICS, SAE_ARCHITECTURES

    with pytest.raises(ConfigError, match="registered twice"):
        METRICS.register("cka-linear")(type("Other", (), {}))
    with pytest.raises(ConfigError, match="registered twice"):
        SAE_ARCHITECTURES.register("topk")(type("Other", (), {}))


def test_unbounded_architecture_keeps_every_active_latent(tmp_path):
    """A JumpReLU SAE with L0 > 64 on some units keeps all of them after encoding (no silent cap)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from saematch.activations.store import finish_layer, open_layer, write_shard
    from saematch.features.encode import encode_sparse

    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=256))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.threshold.fill_(0.05)
    root = tmp_path / "layer_00"
    x = torch.randn(300, 16) * 3
    write_shard(root, 0, x.to(torch.bfloat16), "h")
    finish_layer(root, "h", 300, 4096, d_model=16, dtype="bfloat16")
    store = open_layer(root)
    dense_l0 = (sae.encode(store.read_rows(0, 300).float()) > 0).sum(1).numpy()
    assert dense_l0.max() > 64
    enc = encode_sparse(sae, store, batch=128)
    np.testing.assert_array_equal(np.diff(enc.X.indptr), dense_l0)
    assert enc.n_truncated == 0 and enc.max_l0 == dense_l0.max()
    capped = encode_sparse(sae, store, batch=128, max_active=64)  # a cap the user sets is counted, not hidden
    assert capped.n_truncated == int((dense_l0 > 64).sum()) and np.diff(capped.X.indptr).max() == 64


def test_public_api_is_pinned():
    assert saematch.__all__ == ["RunStore", "__version__", "get_metric", "load_config", "run", "status"]
    assert isinstance(saematch.__version__, str)
    for name in saematch.__all__:
        assert getattr(saematch, name) is not None


def test_run_store_answers_every_table(tiny):
    path, _ = tiny
    store = saematch.RunStore(load_config(path).run_dir)
    assert {"pairs", "features", "scores", "best_layers"} <= set(store.views)
    assert len(store.pairs()) > 0 and len(store.scores("metric = 'cka-linear'")) == 2
    assert set(store.best_layers()["metric"]) >= {"cka-linear"}


def test_config_explain_documents_every_key(tiny, capsys):
    path, _ = tiny
    assert main(["config", str(path), "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keyed = [ln for ln in lines if "=" in ln.split("#")[0]]
    assert any(ln.startswith("sae.k = 4") and "#" in ln for ln in keyed)
    assert all("#" in ln for ln in keyed), [ln for ln in keyed if "#" not in ln]
    assert any("features.encode_batch" in ln and "[not hashed]" in ln for ln in keyed)


def test_jobs_lists_graph_nodes(tiny, capsys):
    from saematch.jobs import main as jobs

    path, _ = tiny
    assert jobs([str(path)]) == 0
    assert capsys.readouterr().out.split() == ["llama:0", "llama:3", "gpt2:1", "llama@seed1:0", "llama@seed1:3",
                                               "llama@random:0", "llama@random:3", "llama@embed:0", "gpt2@seed1:1",
                                               "gpt2@random:1", "gpt2@embed:0"]
    assert jobs([str(path), "--stage", "match"]) == 0
    assert capsys.readouterr().out.split()[:5] == ["match:llama:0:gpt2:1", "match:llama@random:0:gpt2:1",
                                                   "match:llama:0:gpt2@random:1", "match:llama@embed:0:gpt2:1",
                                                   "match:llama:0:gpt2@embed:0"]


def test_rerun_is_fast(tiny):
    path, _ = tiny
    t = time.perf_counter()
    assert run(path).built == ()
    assert time.perf_counter() - t < 5.0
    ex = executor_for(load_config(path))
    assert [s for s in ex.status() if s.state != "done"] == []
    json.dumps([s.__dict__ for s in ex.status()])  # serialisable for scripts
