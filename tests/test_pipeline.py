"""`saematch run` end to end on tiny random models, then queries on its pair store."""

import json
import re

import pandas as pd
import pytest

from conftest import write_config
from saematch.cli import main
from saematch.matching.store import PairStore


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = {
        "run_dir": str(tmp / "run"), "cache_dir": str(tmp / "cache"),
        "models": [{"name": str(tiny_dir / "llama"), "label": "llama", "layers": [0, 2, 3]},
                   {"name": str(tiny_dir / "gpt2"), "label": "gpt2", "layers": [0, 1, 2]}],
        "corpus": {"source": str(tiny_dir / "docs"), "max_tokens": 3000, "window": 64, "min_context": 2},
        "extract": {"batch_size": 4, "dtype": "float32", "shard_units": 512},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 4096, "batch_size": 256, "loss_windows": 2, "lr": 0.003},
        "features": {"top_contexts": 4},
        "similarity": {"n_permutations": 30, "n_bootstrap": 5, "max_units": 300, "max_pairs": 200},
    }
    path = write_config(tmp / "c.yaml", cfg)
    assert main(["run", str(path)]) == 0
    return tmp / "run", path


def test_run_writes_every_artifact(tiny_run):
    run, _ = tiny_run
    html = (run / "report" / "report.html").read_text()
    # self-contained: every image inlined, nothing fetched from a network
    assert html.count("<img") == html.count('src="data:image/png;base64,') > 0
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html
    scores = pd.read_parquet(run / "similarity" / "scores.parquet")
    assert {"svcca", "rsa", "cka-linear", "mknn", "procrustes", "linear-r2"} <= set(scores.metric)
    assert len(scores[scores.metric == "cka-linear"]) == 9  # 3 x 3 layer grid
    assert scores[scores.metric == "svcca"]["n_permutations"].eq(30).all()
    for layer in (0, 2, 3):
        ev = json.loads((run / "saes" / "llama" / f"layer_{layer:02d}" / "eval.json").read_text())
        assert 0 <= ev["fvu"] and ev["l0"] <= 4 and ev["loss_clean"] > 0


def test_query_api_and_cli(tiny_run, capsys):
    run, _ = tiny_run
    store = PairStore(run)
    lp = store.layer_pairs()
    assert len(lp) == 9
    top = store.top_pairs(0, 1, limit=5, only_kept=False)
    assert len(top) > 0 and top["correlation"].is_monotonic_decreasing
    row = top.iloc[0]
    partner = store.partner("llama", 0, int(row.feature_a))
    assert (partner["feature_b"] == row.feature_b).any()
    word = store.sql("SELECT top_words[1] AS w FROM features WHERE len(top_words) > 0 LIMIT 1")["w"].iloc[0]
    assert len(store.search(word)) > 0
    assert main(["query", str(run), "--layers", "0", "1", "--limit", "3", "--all"]) == 0
    out = capsys.readouterr().out
    assert "A:" in out and "B:" in out and "«" in out
    assert main(["query", str(run), "--sql", "SELECT count(*) AS n FROM pairs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n"] == int(lp["n_pairs"].sum())


def test_rerun_is_cached(tiny_run, capsys):
    run, path = tiny_run
    before = (run / "similarity" / "scores.parquet").read_bytes()
    assert main(["run", str(path)]) == 0
    assert (run / "similarity" / "scores.parquet").read_bytes() == before


def test_wandb_offline_run_directory(tiny_run, monkeypatch):
    run, path = tiny_run
    wdir = run / "wandb"
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(wdir))  # what the logger sets; here restored after the test
    assert main(["report", str(path), "--wandb"]) == 0
    runs = list(wdir.rglob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" and p.stat().st_size > 0 for r in runs for p in r.iterdir())
