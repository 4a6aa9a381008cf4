"""End to end through the CLI on tiny models with different tokenizers."""

import torch

from conftest import write_config
from saematch.activations import open_layer
from saematch.adapter import load_model
from saematch.artifacts import RunLayout
from saematch.cli import main
from saematch.config import load_config
from saematch.corpus import Corpus


def test_extract_writes_aligned_rows(tiny_config, tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config)
    assert main(["extract", str(cfg_path)]) == 0
    cfg = load_config(cfg_path)
    lay = RunLayout(cfg.run_dir and __import__("pathlib").Path(cfg.run_dir))
    corpus = Corpus(lay.corpus())
    assert corpus.n_units > 300
    units = corpus.units
    texts = corpus.texts
    for _, u in units.sample(20, random_state=0).iterrows():
        assert texts[u["doc"]][u["char_start"]:u["char_end"]] == u["text"]
    for spec in cfg.models:
        adapter = load_model(spec.name, cfg.cache_path, dtype="float32")
        windows = corpus.windows(spec.key)
        win, pos = corpus.unit_windows(spec.key)
        ids = corpus.token_ids(spec.key)
        prefix = corpus.prefix(spec.key)
        for layer in spec.layers:
            store = open_layer(lay.acts(spec.key, layer))
            assert store.n_rows == corpus.n_units and store.d_model == adapter.d_model
            for u in [0, corpus.n_units // 2, corpus.n_units - 1]:  # recompute a unit by hand
                w = windows[win[u]]
                x = torch.tensor([prefix + ids[w.doc][w.start:w.stop].tolist()])
                want = adapter.resid_post(x, [layer])[layer][0, pos[u]]
                torch.testing.assert_close(store.read_rows(u, u + 1)[0], want.to(torch.bfloat16).float())


def test_extract_resumes_after_crash(tiny_config, tmp_path, monkeypatch):
    import saematch.activations.extract as ex

    cfg_path = write_config(tmp_path / "c.yaml", tiny_config)
    assert main(["extract", str(cfg_path)]) == 0
    cfg = load_config(cfg_path)
    lay = RunLayout(__import__("pathlib").Path(cfg.run_dir))
    spec = cfg.models[0]
    root = lay.acts(spec.key, spec.layers[0])
    before = {p.name: p.read_bytes() for p in root.glob("shard_*.safetensors")}
    # simulate a crash: manifest gone, one shard lost, another torn
    for layer in spec.layers:
        (lay.acts(spec.key, layer) / "manifest.json").unlink()
    (root / "shard_00001.safetensors").unlink()
    torn = root / "shard_00002.safetensors"
    torn.write_bytes(torn.read_bytes()[:100])
    calls = []
    real = ex._shard_rows
    monkeypatch.setattr(ex, "_shard_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["extract", str(cfg_path)]) == 0
    assert len(calls) == 2  # only the two damaged shards were recomputed
    after = {p.name: p.read_bytes() for p in root.glob("shard_*.safetensors")}
    assert after == before
    assert open_layer(root).n_rows > 0
    calls.clear()
    assert main(["extract", str(cfg_path)]) == 0 and calls == []  # complete: nothing to do


def test_cli_errors_are_one_line(tiny_config, tmp_path, capsys):
    bad = dict(tiny_config, models=[dict(tiny_config["models"][0], layers=[0, 9]), tiny_config["models"][1]])
    assert main(["extract", str(write_config(tmp_path / "c.yaml", bad))]) == 2
    err = capsys.readouterr().err
    assert "layer 9 is out of range" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("   \n")
    cfg = dict(tiny_config, corpus=dict(tiny_config["corpus"], source=str(empty)))
    assert main(["extract", str(write_config(tmp_path / "e.yaml", cfg))]) == 2
    assert "empty" in capsys.readouterr().err
