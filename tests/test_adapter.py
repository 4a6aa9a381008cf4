from pathlib import Path

import pytest
import torch

from saematch.adapter import load_model
from saematch.errors import SaematchError


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def adapter(request, tiny_dir):
    return load_model(str(tiny_dir / request.param), Path("/nonexistent-cache"), dtype="float32")


def test_resid_post_equals_next_hidden_state(adapter):
    ids = torch.randint(0, 100, (2, 17))
    n = adapter.n_layers
    hs = adapter.model(input_ids=ids, output_hidden_states=True).hidden_states
    got = adapter.resid_post(ids, list(range(n)))
    for layer in range(n - 1):  # hidden_states[L+1] is the output of block L ...
        torch.testing.assert_close(got[layer], hs[layer + 1], rtol=1e-5, atol=1e-5)
    # ... except the last one, which HF takes after the final norm
    assert not torch.allclose(got[n - 1], hs[n], atol=1e-3)
    assert got[0].shape == (2, 17, adapter.d_model)


def test_stops_after_deepest_layer(adapter):
    calls = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(adapter.blocks)]
    try:
        adapter.resid_post(torch.randint(0, 100, (1, 8)), [0, 1])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]


def test_layer_out_of_range(adapter):
    with pytest.raises(SaematchError, match="out of range.*valid layers: 0..") as exc:
        adapter.resid_post(torch.randint(0, 100, (1, 8)), [0, adapter.n_layers])
    assert str(adapter.n_layers) in str(exc.value)


def test_splice_identity_and_zero(adapter):
    ids = torch.randint(0, 100, (2, 12))
    clean = adapter.token_losses(ids)
    ident = adapter.token_losses(ids, layer=1, replace=lambda x: x)
    torch.testing.assert_close(ident, clean, rtol=0, atol=0)
    zero = adapter.token_losses(ids, layer=1, replace=torch.zeros_like)
    assert not torch.allclose(zero, clean)
    # zero-ablation by hand: run the blocks after 1 on a zero residual is what the hook does
    assert clean.shape == (2, 11)


def test_unknown_model_is_clear_error(tmp_path):
    with pytest.raises(SaematchError, match="cannot load model"):
        load_model(str(tmp_path / "no-such-model"), tmp_path)
