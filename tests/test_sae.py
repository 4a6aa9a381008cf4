"""SAE training through our store with SAELens, saving/loading, resume, splice, fit checks."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from saematch.activations.store import finish_layer, open_layer, write_shard
from saematch.config import ModelSpec
from saematch.errors import SaematchError
from saematch.sae import check_fits, load_sae_dir, train_sae
from saematch.sae.architectures.topk import TopKSAEConfig
from saematch.sae.evaluate import lm_loss, reconstruction_stats


def planted_store(root, n=24576, d=64, n_dict=128, k_true=3, noise=0.01, seed=0, shard=4096, scale=50.0):
    """Sparse combinations of known unit directions plus noise, at a large raw scale."""
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(n_dict, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(n_dict, generator=g)[:k_true] for _ in range(n)])
    coef = torch.rand(n, k_true, generator=g) + 0.5
    x = torch.zeros(n, d)
    x += (coef[..., None] * D[idx]).sum(1)
    x = (x + noise * torch.randn(n, d, generator=g)) * scale
    for k in range(-(-n // shard)):
        write_shard(root, k, x[k * shard:(k + 1) * shard].to(torch.float32))
    finish_layer(root, "", n, shard, d_model=d, dtype="float32")
    return open_layer(root), D


CFG = TopKSAEConfig(expansion=4, k=3, lr=3e-3, training_tokens=24576 * 4, batch_size=512, checkpoint_every=40,
                eval_fraction=0.1, loss_windows=0)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    store, D = planted_store(root / "acts")
    res = train_sae(store, CFG, root / "sae", n_train=int(store.n_rows * 0.9))
    return store, D, res, root / "sae"


def test_planted_dictionary_recovered(planted):
    store, D, res, _ = planted
    W_dec = torch.nn.functional.normalize(res.sae.W_dec.detach(), dim=1)
    mmcs = (D @ W_dec.T).max(dim=1).values.mean().item()
    assert mmcs >= 0.9, f"mean max cosine {mmcs:.3f}"
    ev = reconstruction_stats(res.sae, store, int(store.n_rows * 0.9), store.n_rows)
    assert ev.fvu < 0.1 and ev.l0 <= CFG.k + 1e-6
    # the scale brings E||x||^2 to d_in; it was folded into the weights, so raw inputs work
    assert res.scale == pytest.approx((64 / store.read_rows(0, 22000).pow(2).sum(1).mean().item()) ** 0.5, rel=0.05)


def test_save_load_identical_encodings(planted):
    import sae_lens

    store, _, res, out = planted
    loaded = sae_lens.SAE.load_from_disk(str(out))
    x = store.read_rows(0, 500)
    torch.testing.assert_close(loaded.encode(x), res.sae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(load_sae_dir(out).decode(loaded.encode(x)), res.sae.decode(res.sae.encode(x)))


def test_resume_gives_identical_weights(tmp_path, monkeypatch):
    store, _ = planted_store(tmp_path / "acts", n=8192, shard=2048)
    cfg = dataclasses.replace(CFG, training_tokens=512 * 60, checkpoint_every=20)
    ref = train_sae(store, cfg, tmp_path / "ref", n_train=7000)

    real = type(store).batches

    def crashing(self, *a, **k):  # the data stream dies after 45 batches: a simulated kill
        for i, b in enumerate(real(self, *a, **k)):
            if i == 45 and not k.get("skip"):
                raise RuntimeError("killed")
            yield b

    monkeypatch.setattr(type(store), "batches", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        train_sae(store, cfg, tmp_path / "run", n_train=7000)
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
    monkeypatch.setattr(type(store), "batches", real)
    res = train_sae(store, cfg, tmp_path / "run", n_train=7000)
    assert res.resumed_from == 40
    for name, p in ref.sae.state_dict().items():
        torch.testing.assert_close(res.sae.state_dict()[name], p, rtol=0, atol=0)


class _Identity:
    def encode(self, x):
        return x

    def decode(self, f):
        return f


class _Zero(_Identity):
    def decode(self, f):
        return torch.zeros_like(f)


def test_splice_identity_is_clean_and_zero_is_ablation(tiny_dir, tmp_path):
    from saematch.adapter import load_model

    adapter = load_model(str(tiny_dir / "llama"), tmp_path, dtype="float32")
    ids = torch.randint(0, 200, (2, 24))
    ident = lm_loss(adapter, _Identity(), 1, ids, skip=0)
    assert ident["loss_spliced"] == ident["loss_clean"] and ident["loss_recovered"] == 1.0
    zero = lm_loss(adapter, _Zero(), 1, ids, skip=0)
    assert zero["loss_spliced"] == zero["loss_zero"] and zero["loss_recovered"] == 0.0
    assert zero["loss_zero"] != zero["loss_clean"]


def test_d_in_mismatch_is_clear(planted):
    _, _, res, _ = planted
    spec = ModelSpec(name="m", layers=(3,))
    with pytest.raises(SaematchError, match="d_in=64, but model 'm' layer 3 has d_model=576"):
        check_fits(res.sae, spec, 3, 576, "at somewhere")
    fake = SimpleNamespace(cfg=SimpleNamespace(d_in=64, metadata=SimpleNamespace(hook_name="blocks.5.hook_resid_post")))
    with pytest.raises(SaematchError, match="hook"):
        check_fits(fake, spec, 3, 64, "x")


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _topk_pair(rescale: bool, device: str, kernel: str = "sparse"):
    import sae_lens as sl

    from saematch.sae.sparse_topk import make_sparse_topk

    torch.manual_seed(0)
    cfg = sl.TopKTrainingSAEConfig(d_in=24, d_sae=96, k=5, dtype="float32", device="cpu",
                                   rescale_acts_by_decoder_norm=rescale)
    dense, sparse = sl.TopKTrainingSAE(cfg), make_sparse_topk(cfg)
    with torch.no_grad():  # decoder rows of unequal norm, a non-zero bias: every term matters
        dense.W_dec.mul_(torch.rand(96, 1) + 0.5)
        dense.b_enc.normal_(0, 0.1)
        dense.b_dec.normal_(0, 0.1)
    sparse.load_state_dict(dense.state_dict())
    sparse.kernels = {"decode": kernel, "encoder_grad": kernel}
    return dense.to(device), sparse.to(device)


def _forward(sae, x, dead):
    from sae_lens.saes.sae import TrainStepInput

    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False)
    out = sae.training_forward_pass(step)
    out.loss.backward()
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["sparse", "dense"])
@pytest.mark.parametrize("rescale", [True, False])
def test_sparse_topk_equals_saelens_loss_and_gradients(rescale, kernel, device):
    """Our TopK class against SAELens' own, on every device present and with both kernels."""
    dense, sparse = _topk_pair(rescale, device, kernel)
    x = torch.randn(64, 24, device=device)
    dead = torch.zeros(96, dtype=torch.bool, device=device)
    dead[torch.randperm(96)[:30]] = True
    d, s = (_forward(sae, x, dead) for sae in (dense, sparse))
    assert s.feature_acts.is_sparse and s.losses["auxiliary_reconstruction_loss"] > 0
    for key in ("mse_loss", "auxiliary_reconstruction_loss"):
        torch.testing.assert_close(s.losses[key], d.losses[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.sae_out, d.sae_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.feature_acts.to_dense(), d.feature_acts, rtol=1e-5, atol=1e-6)
    for name, p in dense.named_parameters():
        torch.testing.assert_close(dict(sparse.named_parameters())[name].grad, p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["sparse", "dense"])
def test_sparse_topk_under_bf16_autocast_keeps_fp32_weights(kernel, device):
    """Mixed precision: under bf16 autocast the loss stays within bf16 error of SAELens' own under autocast,
    and the weights and their gradients stay fp32 (master weights)."""
    dense, sparse = _topk_pair(False, device, kernel)
    x = torch.randn(64, 24, device=device)
    outs = []
    for sae in (dense, sparse):
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            outs.append(_forward(sae, x, None))
    loss_d, loss_s = (float(o.loss.detach()) for o in outs)
    assert abs(loss_s - loss_d) <= 0.02 * loss_d
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in sparse.parameters())


def test_training_is_the_same_with_dense_kernels_and_a_streaming_feed(planted, tmp_path):
    """The kernels, the in-RAM layer and the prefetch feed are speed choices: a short run with the dense
    kernels, streamed from disk, ends at the same weights up to rounding (fp32 sums in another order)."""
    store = planted[0]
    short = dataclasses.replace(CFG, training_tokens=512 * 20, checkpoint_every=1000)
    runs = {}
    for name, cfg in {"default": dataclasses.replace(short, feed_in_ram=True),
                      "dense-streamed": dataclasses.replace(short, kernel="dense", feed_in_ram=False, prefetch=1)}.items():
        res = train_sae(store, cfg, tmp_path / name, n_train=int(store.n_rows * 0.9), device="cpu")
        assert res.device == "cpu" and res.feed_share is not None and 0 <= res.feed_share < 1
        runs[name] = res
    assert runs["dense-streamed"].kernels == {"decode": "dense", "encoder_grad": "dense"}
    torch.testing.assert_close(runs["dense-streamed"].sae.W_dec, runs["default"].sae.W_dec, rtol=1e-3, atol=1e-4)
