"""The crosscoder node end to end on the tiny models (llama d_model 32, BPE vs gpt2 d_model 48, unigram):
B layer from calibration, random-init floor, agreement with the Hungarian pairs, report section."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_run, write_config
from saematch.config import load_config
from saematch.crosscoder import CrosscoderConfig, best_layer_b, latent_scaling_summary, load_crosscoder
from saematch.errors import ConfigError, SaematchError
from saematch.graph.plan import build_plan
from saematch.runs import run

CC = {"enabled": True, "expansion": 2, "k": 4, "lr": 3e-3, "training_tokens": 4096, "batch_size": 128,
      "map_rows": 2000, "top_units": 5, "checkpoint_every": 10, "seeds": 2, "variants": ["plain", "dedicated"]}
RUNS = {"plain", "dedicated"}


@pytest.fixture(scope="module")
def built(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ccnode")
    cfg = tiny_run(
        tiny_dir, tmp, [0, 3], [0, 2], 3000,
        extract={"dtype": "float32", "shard_units": 256},
        sae={"expansion": 2, "k": 4, "training_tokens": 2048, "batch_size": 64, "loss_windows": 0},
        controls={"seed": False, "shuffle": False, "random_init": True},
        calibration={"n_bootstrap": 5},
        similarity={"n_permutations": 5, "n_bootstrap": 0, "max_units": 200, "max_pairs": 100},
        crosscoder=CC,
    )
    path = write_config(tmp / "c.yaml", cfg)
    res = run(path, stages=("crosscoder",))
    return path, load_config(path), res


def _nodes(cfg):
    return {n.id: n for n in build_plan(cfg).stage("crosscoder")}


def test_one_node_per_a_layer_and_its_floor(built):
    _, cfg, res = built
    ids = {"crosscoder:llama:0:gpt2", "crosscoder:llama:3:gpt2",
           "crosscoder:llama@random:0:gpt2", "crosscoder:llama@random:3:gpt2"}
    assert set(_nodes(cfg)) == ids and ids <= set(res.built)
    again = run(built[0], stages=("crosscoder",))  # complete manifests: nothing is rebuilt
    assert again.built == ()


def test_real_node_at_the_best_b_layer_with_both_d_models(built):
    from saematch.crosscoder.rule import penalty_rule
    from saematch.graph.context import RunContext
    from saematch.matching.stage import train_mask

    _, cfg, _ = built
    best = pd.read_parquet(Path(cfg.run_dir) / "calibration" / "best.parquet")
    mask = train_mask(RunContext(cfg))
    for la in (0, 3):
        node = _nodes(cfg)[f"crosscoder:llama:{la}:gpt2"]
        man = json.loads((node.path / "manifest.json").read_text())
        row = best[(best.readout == "matched-corr") & (best.model_a == "llama") & (best.layer_a == la)].iloc[0]
        assert man["layer_b"] == int(row.layer_b) == best_layer_b(Path(cfg.run_dir), "llama", la, "gpt2")[0]
        # lambda by the recorded rule; the run's split: train documents train, test documents are read
        assert man["penalty"] == man["penalty_rule"]["chosen"] == penalty_rule().chosen
        assert man["n_train_units"] == int(mask.sum()) and man["n_test_units"] == int((~mask).sum())
        runs = man["runs"]
        assert [(r["variant"], r["seed"]) for r in runs] == [("plain", 0), ("plain", 1), ("dedicated", 0), ("dedicated", 1)]
        assert set(man["spread"]) == RUNS and man["spread"]["plain"]["shared_fraction"]["n"] == 2
        lat_all = pd.read_parquet(node.path / "latents.parquet")
        for rec in runs:
            assert man["control"] is None and rec["train"]["steps"] == CC["training_tokens"] // CC["batch_size"]
            assert rec["train"]["n_train"] == int(mask.sum()) and rec["summary"]["n_heldout_units"] == int((~mask).sum())
            d = node.path / rec["variant"] / f"seed_{rec['seed']}"
            cc = load_crosscoder(d)
            assert cc.d_models == [32, 48] and cc.d_latent == 2 * 48 and cc.names == ["llama", "gpt2"]
            assert sum(cc.dedicated) == (round(0.2 * 96 / 2) * 2 if rec["variant"] == "dedicated" else 0)
            lat = pd.read_parquet(d / "latents.parquet")
            assert lat.equals(lat_all[(lat_all.variant == rec["variant"]) & (lat_all.seed == rec["seed"])]
                              .drop(columns=["variant", "seed"]).reset_index(drop=True))
            assert len(lat) == cc.d_latent and set(lat["class"]) <= {"shared", "a_only", "b_only", "dead"}
            s = rec["summary"]
            fr = [s[f"{c}_fraction"] for c in ("shared", "a_only", "b_only", "dead")]
            assert sum(fr) == pytest.approx(1.0) and s["n_dead"] == int((lat["class"] == "dead").sum())
            assert s["n_live"] == int((lat["class"] != "dead").sum()) and 0 < s["fvu_a"] < 1.5
            assert rec["latent_scaling"]["n_suspect"] == int(lat["suspect_exclusive"].sum())
        vals = [r["summary"]["shared_fraction"] for r in runs if r["variant"] == "plain"]
        assert man["spread"]["plain"]["shared_fraction"]["min"] == pytest.approx(min(vals))
        rec = runs[0]
        d = node.path / "plain" / "seed_0"
        cc, lat = load_crosscoder(d), pd.read_parquet(d / "latents.parquet")
        # agreement: exactly the shared latents, against features that exist, on the held-out units
        agr = pd.read_parquet(d / "agreement.parquet")
        assert sorted(agr["latent"]) == sorted(lat.loc[lat["class"] == "shared", "latent"])
        pairs = pd.read_parquet(Path(cfg.run_dir) / "pairs" / f"llama_L{la:02d}__gpt2_L{man['layer_b']:02d}" / "pairs.parquet")
        partner = dict(zip(pairs.feature_a, pairs.feature_b))
        ok = agr[agr.feature_a >= 0]
        assert (ok.hungarian_b == [partner.get(a, -1) for a in ok.feature_a]).all()
        assert (ok.is_hungarian_pair == (ok.hungarian_b == ok.feature_b)).all()
        assert rec["agreement"]["n_latents"] == len(agr)
        # the saved dictionary reads each model's own activations and reconstructs them
        from saematch.activations import open_layer

        xs = [open_layer(Path(cfg.run_dir) / "acts" / k / f"layer_{L:02d}").read_rows(0, 50).float()
              for k, L in (("llama", la), ("gpt2", man["layer_b"]))]
        rec = cc.reconstruct(xs)
        assert [r.shape for r in rec] == [(50, 32), (50, 48)] and all(torch.isfinite(r).all() for r in rec)


def test_floor_node_reads_the_random_init_network_at_the_same_layer_pair(built):
    _, cfg, _ = built
    nodes = _nodes(cfg)
    for la in (0, 3):
        real = json.loads((nodes[f"crosscoder:llama:{la}:gpt2"].path / "manifest.json").read_text())
        fl_node = nodes[f"crosscoder:llama@random:{la}:gpt2"]
        floor = json.loads((fl_node.path / "manifest.json").read_text())
        assert floor["control"] == "random-init" and floor["layer_b"] == real["layer_b"]
        assert set(floor["spread"]) == RUNS | {"plain-whitened"}  # and the spectrum-matched floor
        assert all(r["agreement"] is None for r in floor["runs"]) and not (fl_node.path / "agreement.parquet").exists()
        assert load_crosscoder(fl_node.path / "plain" / "seed_0").names == ["llama@random", "gpt2"]
        w_real = load_crosscoder(nodes[f"crosscoder:llama:{la}:gpt2"].path / "plain" / "seed_0").W_enc[0]
        w_floor = load_crosscoder(fl_node.path / "plain" / "seed_0").W_enc[0]
        w_white = load_crosscoder(fl_node.path / "plain-whitened" / "seed_0").W_enc[0]
        assert not torch.equal(w_real, w_floor) and not torch.equal(w_floor, w_white)  # other inputs, other weights


def test_report_section_tables_and_histogram(built, tmp_path):
    from saematch.crosscoder.node import report_section
    from saematch.graph.context import RunContext

    _, cfg, _ = built
    title, body, figs = report_section(RunContext(cfg), tmp_path)
    assert "rosscoder" in title and len(figs) == 1 and figs[0].is_file() and figs[0].parent == tmp_path
    for text in ("floor, spectrum-matched", "dedicated", "dead", "FVU A", "matched floor exclusive", "±",
                 "largest lambda", "Latent Scaling", "same pair", "data:image/png;base64", "median firing entropy"):
        assert text in body, text
    # per A layer: plain (pair, floor, matched floor) and dedicated (pair, floor) rows, plus the header
    frac = body[body.index("Class fractions"):body.index("Separation")]
    assert frac.count("<tr>") == 1 + 2 * 5
    res = run(built[0], stages=("report",))  # the report node includes the section (compare is built on the way)
    html = res.report.read_text()
    assert title in html and "floor, spectrum-matched" in html
    assert (res.report.parent / "crosscoder_rel_norms.png").is_file()
    # the browser shows the same view below its app: fractions beside the floor's, shared latents beside the pairs
    page = (res.report.parent / "browser.html").read_text()
    section = page[page.index('<section id="crosscoder">'):]
    assert page.index("</main>") < page.index('<section id="crosscoder">') < page.index("<script")
    for text in ("floor, spectrum-matched", "dead latents", "FVU B", "Hungarian partner", "llama L0 ~ gpt2"):
        assert text in section, text
    assert "decoder-norm penalty" in html


def test_hashing_and_config_documentation(built):
    _, cfg, _ = built
    base = build_plan(cfg).hashes
    quiet = dataclasses.replace(cfg, crosscoder=dataclasses.replace(cfg.crosscoder, log_every=1, threads=1,
                                                                    checkpoint_every=3))
    assert build_plan(quiet).hashes == base  # intervals and threads cannot change results
    other = build_plan(dataclasses.replace(cfg, crosscoder=dataclasses.replace(cfg.crosscoder, k=5))).hashes
    changed = {k for k in base if base[k] != other[k]}
    assert {k for k in changed if not k.startswith("report")} == set(_nodes(cfg))
    for f in dataclasses.fields(CrosscoderConfig):
        assert f.metadata.get("doc"), f.name


def test_best_layer_b_and_registry_errors(built, tmp_path):
    _, cfg, _ = built
    with pytest.raises(SaematchError, match="no 'matched-corr' row for llama layer 1"):
        best_layer_b(Path(cfg.run_dir), "llama", 1, "gpt2")
    with pytest.raises(SaematchError, match="calibrate node"):
        best_layer_b(tmp_path, "llama", 0, "gpt2")
    p = write_config(tmp_path / "c.yaml", {"models": [{"name": "a", "layers": [1]}, {"name": "b", "layers": [2]}],
                                           "sae": {"architecture": "crosscoder"}})
    with pytest.raises(ConfigError, match="not a single-model SAE.*crosscoder section"):
        load_config(p)


def test_latent_scaling_summary_counts_causes():
    lat = pd.DataFrame({"class": ["a_only", "a_only", "a_only", "b_only", "shared"],
                        "nu": [0.05, 0.6, 0.5, 0.9, 1.0], "nu_err": [0.0, 0.5, 0.1, 0.0, 0.5],
                        "nu_rec": [0.05, 0.1, 0.4, 0.9, 0.5]})
    s = latent_scaling_summary(lat, 0.3)
    assert s["a_only"] == {"n": 3, "suspect": 2, "suspect_fraction": pytest.approx(2 / 3), "shrinkage": 1,
                           "decoupling": 1, "median_nu": 0.5}
    assert s["b_only"]["suspect"] == 1 and s["n_exclusive"] == 4 and s["n_suspect"] == 3
    assert np.isclose(s["suspect_fraction"], 0.75) and s["scaling_shared_fraction"] == pytest.approx(0.8)
