"""Each bad input: one clear line, non-zero exit, no traceback, earlier artifacts intact."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_config


def cli(*args, env=None):
    e = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "saematch.cli", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=600)


def digest(root: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def extracted(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    cfg = {
        "run_dir": str(tmp / "run"), "cache_dir": str(tmp / "cache"),
        "models": [{"name": str(tiny_dir / "llama"), "label": "llama", "layers": [0, 2]},
                   {"name": str(tiny_dir / "gpt2"), "label": "gpt2", "layers": [1]}],
        "corpus": {"source": str(tiny_dir / "docs"), "max_tokens": 3000, "window": 64, "min_context": 2},
        "extract": {"dtype": "float32", "shard_units": 256},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 2048, "batch_size": 256, "loss_windows": 0},
    }
    path = write_config(tmp / "good.yaml", cfg)
    r = cli("extract", path)
    assert r.returncode == 0, r.stderr
    return cfg, tmp


def check_clean_failure(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(err) == 1, r.stderr
    for n in needles:
        assert n in err[0], err[0]


def bad_run(extracted, name, change, *needles, command="extract", intact=""):
    """Run a broken config on the good run dir; everything under ``intact`` must be unchanged."""
    cfg, tmp = extracted
    keep = Path(cfg["run_dir"]) / intact
    before = digest(keep)
    new = change(dict(cfg))
    r = cli(command, write_config(tmp / f"{name}.yaml", new))
    check_clean_failure(r, *needles)
    assert digest(keep) == before
    return r


def test_unknown_model(extracted, tmp_path):
    bad_run(extracted, "unknown", lambda c: {**c, "models": [{"name": str(tmp_path / "nope"), "layers": [0]}, c["models"][1]]},
            "cannot load model")
    bad_run(extracted, "unknown-hub", lambda c: {**c, "models": [{"name": "no-such-org/no-such-model", "layers": [0]}, c["models"][1]]},
            "cannot load model", "no-such-org/no-such-model")


def test_layer_out_of_range(extracted):
    bad_run(extracted, "layer", lambda c: {**c, "models": [{**c["models"][0], "layers": [0, 7]}, c["models"][1]]},
            "layer 7 is out of range", "0..3")


def test_sae_with_wrong_d_in(extracted, tmp_path):
    import sae_lens

    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=16, d_sae=32))
    sae.save_model(str(tmp_path / "sae16"))
    bad_run(extracted, "dim", lambda c: {**c, "models": [{**c["models"][0], "layers": [0], "sae_path": str(tmp_path / "sae16")},
                                                          c["models"][1]]},
            "d_in=16", "d_model=32", command="train")


def test_empty_corpus(extracted, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("\n\n  \n")
    bad_run(extracted, "empty", lambda c: {**c, "corpus": {**c["corpus"], "source": str(tmp_path / "empty")}}, "empty")


def test_small_corpus_is_a_warning(extracted, tmp_path):
    cfg, tmp = extracted
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("Only a few words of text here, not thousands. " * 12)
    new = {**cfg, "run_dir": str(tmp_path / "run"), "corpus": {**cfg["corpus"], "source": str(tmp_path / "small"),
                                                               "min_context": 1}}
    r = cli("extract", write_config(tmp_path / "small.yaml", new))
    assert r.returncode == 0, r.stderr
    assert "using what exists" in r.stderr


def test_nan_activations(extracted, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    with torch.no_grad():
        m.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    m.save_pretrained(tmp_path / "nanllama")
    AutoTokenizer.from_pretrained(tiny_dir / "llama").save_pretrained(tmp_path / "nanllama")
    # a new model means a new corpus (its tokenizer is part of the corpus identity), so use a fresh run dir
    cfg, tmp = extracted
    run = tmp_path / "nanrun"
    new = {**cfg, "run_dir": str(run), "models": [{"name": str(tmp_path / "nanllama"), "label": "llama", "layers": [0, 2]},
                                                  cfg["models"][1]]}
    r = cli("extract", write_config(tmp_path / "nan.yaml", new))
    check_clean_failure(r, "NaN", "layer 2")
    assert not (run / "acts" / "llama" / "layer_02" / "manifest.json").exists()


def test_unknown_config_key(extracted):
    bad_run(extracted, "key", lambda c: {**c, "corpus": {**c["corpus"], "max_tokenz": 5}}, "corpus.max_tokenz")


def test_read_only_output_dir(extracted):
    bad_run(extracted, "ro", lambda c: {**c, "run_dir": "/proc/saematch-run"}, "not writable")


def test_no_pickle_and_no_remote_code_by_default(tiny_dir, tmp_path, monkeypatch):
    src = Path(__file__).resolve().parents[2] / "src"
    text = "\n".join(p.read_text() for p in src.rglob("*.py"))
    for banned in ("torch.load(", "pickle.load", "allow_pickle=True", "yaml.load(", "yaml.unsafe_load"):
        assert banned not in text, banned
    import transformers

    from saematch.adapter import load_model

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: seen.append(k) or real(*a, **k))
    load_model(str(tiny_dir / "llama"), tmp_path)
    load_model(str(tiny_dir / "llama"), tmp_path, trust_remote_code=True)
    assert [k["trust_remote_code"] for k in seen] == [False, True]
    assert all(k["use_safetensors"] for k in seen)
