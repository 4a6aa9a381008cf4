"""SAE training throughput, same shapes and device, one run:

- ours: SAELens ``SAETrainer`` with our sparse TopK training SAE (``sae/sparse_topk.py``, kernels picked
  per device by ``sae/kernels.py``, fused Adam), fed by the activation store through the training feed
  (layer held in RAM, background prefetch thread, pinned memory and non-blocking copies on CUDA);
- SAELens' own ``TopKTrainingSAE`` in the same trainer, on tensors already on the device;
- EleutherAI sparsify's ``SparseCoder`` (PyPI ``eai-sparsify``) with torch Adam, on the same tensors.

On CUDA all three run under bf16 autocast (as SAELens and sparsify train there); on the CPU none does.
Also printed: the feed's share of our step time (time spent waiting for a batch).

    python bench/train_sae.py [--steps 30] [--threads 2]                       # CPU: d_in 576, 8x, k 32
    python bench/train_sae.py --device cuda --d-in 2304 --d-sae 16384 --k 64 --batch 4096   # Gemma-2-2B shapes
"""

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from saematch.activations.store import finish_layer, open_layer, write_shard
from saematch.devices import autocast_on, resolve, synchronize
from saematch.sae import kernels
from saematch.sae.architectures.topk import TopKSAEConfig
from saematch.sae.feed import Prefetcher
from saematch.sae.train import _make_trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=None, help="default: 8 x d_in")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--kernel", default="auto", choices=("auto", "sparse", "dense"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve(args.device)
    d, B, k = args.d_in, args.batch, args.k
    F = args.d_sae or 8 * d
    amp = autocast_on(None, dev)
    cast = (lambda: torch.autocast(torch.device(dev).type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    cfg = TopKSAEConfig(expansion=max(1, F // d), k=k, batch_size=B, training_tokens=B * (args.steps + 2), lr=3e-4,
                        kernel=args.kernel)
    n = B * 16
    x = torch.randn(n, d)
    mem = [x[i * B % n:(i * B % n) + B].to(dev) for i in range(args.steps + 2)]

    def timed(step, batches) -> float:
        step(next(batches))  # warm-up
        step(next(batches))
        synchronize(dev)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(next(batches))
        synchronize(dev)
        return B * args.steps / (time.perf_counter() - t)

    def saelens_trainer(stock: bool, data):
        torch.manual_seed(0)
        common = {"d_in": d, "d_sae": F, "dtype": "float32", "device": dev}
        sae = cfg.training_sae(common)
        if stock:
            import sae_lens as sl

            sae = sl.TopKTrainingSAE(sae.cfg)
        else:
            sae.kernels = kernels.choose(args.kernel, dev, B, k, d, F)
        trainer = _make_trainer(cfg, sae, data, dev, amp)
        if stock:  # SAELens' trainer as it ships: its default (multi-tensor) Adam
            for group in trainer.optimizer.param_groups:
                group["fused"], group["foreach"] = None, None
        return trainer, getattr(sae, "kernels", None)

    with tempfile.TemporaryDirectory() as tmp:
        for s in range(4):
            write_shard(Path(tmp), s, x[s * n // 4:(s + 1) * n // 4].to(torch.bfloat16))
        finish_layer(Path(tmp), "", n, n // 4, d_model=d, dtype="bfloat16")
        store = open_layer(tmp)
        with Prefetcher(store.batches(B, in_memory=True), dev, depth=4) as feed:
            trainer, chosen = saelens_trainer(False, feed)
            t0 = time.perf_counter()
            ours = timed(trainer.step, feed)
            wall = time.perf_counter() - t0
            share = feed.wait_s / wall
    saelens = timed(saelens_trainer(True, iter(mem))[0].step, iter(mem))

    print(f"device {dev}, d_in {d}, d_sae {F}, k {k}, batch {B}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"bf16 autocast {amp}; our kernels {chosen}")
    print(f"ours (store feed):                           {ours:9.0f} tok/s")
    print(f"SAELens TopKTrainingSAE (tensors on device): {saelens:9.0f} tok/s  ratio ours/SAELens {ours / saelens:.2f}")
    print(f"feed share of our step time (waiting for a batch): {share:.1%}")
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        print("sparsify not installed (pip install --no-deps eai-sparsify natsort schedulefree): skipped")
        return
    torch.manual_seed(0)
    sc = SparseCoder(d, SparseCoderConfig(num_latents=F, k=k), device=dev)
    opt = torch.optim.Adam(sc.parameters(), lr=3e-4)

    def sp_step(batch):
        with cast():
            out = sc(batch)
        out.fvu.backward()
        opt.step()
        opt.zero_grad()

    sp_rate = timed(sp_step, iter(mem))
    print(f"sparsify SparseCoder (torch Adam):           {sp_rate:9.0f} tok/s  ratio ours/sparsify {ours / sp_rate:.2f}")


if __name__ == "__main__":
    main()
