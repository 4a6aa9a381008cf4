"""SAE training throughput, same shapes and device, one run:

- ours: SAELens ``SAETrainer`` with our sparse TopK training SAE (``sae/sparse_topk.py``, kernels picked
  per device by ``sae/kernels.py``, fused Adam), fed by the activation store through the training feed
  (layer held in RAM, background prefetch thread, pinned memory and non-blocking copies on CUDA);
- SAELens' own ``TopKTrainingSAE`` in the same trainer, on tensors already on the device;
- EleutherAI sparsify's ``SparseCoder`` (PyPI ``eai-sparsify``) with torch Adam, on the same tensors.

On CUDA all three run under bf16 autocast (as SAELens and sparsify train there); on the CPU none does.
Also printed: the feed's share of our step time (time spent waiting for a batch).

    python bench/train_sae.py [--steps 10 --rounds 3] [--threads 2]            # CPU: d_in 576, 8x, k 32
    python bench/train_sae.py --smoke                                            # seconds: d_in 32, 2 steps
    python bench/train_sae.py --device cuda --d-in 2304 --d-sae 16384 --k 64 --batch 4096   # Gemma-2-2B shapes
"""

import argparse
import contextlib
import statistics
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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=None, help="default: 8 x d_in")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--kernel", default="auto", choices=("auto", "sparse", "dense"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each trainer --steps per round); "
                                                          "medians are reported, so a load change hits all alike")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, for the test that keeps every bench running")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.rounds, args.d_in, args.k, args.batch = 2, 1, 32, 4, 64
    torch.set_num_threads(args.threads)
    dev = resolve(args.device)
    d, B, k = args.d_in, args.batch, args.k
    F = args.d_sae or 8 * d
    amp = autocast_on(None, dev)
    cast = (lambda: torch.autocast(torch.device(dev).type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    cfg = TopKSAEConfig(expansion=max(1, F // d), k=k, batch_size=B, training_tokens=B * 10 ** 6, lr=3e-4,
                        kernel=args.kernel)
    n = B * 16
    x = torch.randn(n, d)
    mem = [x[i * B % n:(i * B % n) + B].to(dev) for i in range(16)]

    def cycle():
        i = 0
        while True:
            yield mem[i % len(mem)]
            i += 1

    def timed(step, batches) -> float:
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

    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        SparseCoder = None
        print("sparsify not installed (pip install --no-deps eai-sparsify natsort schedulefree): skipped")
    rates: dict[str, list[float]] = {"ours": [], "ours-mem": [], "saelens": [], "sparsify": []}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(4):
            write_shard(Path(tmp), s, x[s * n // 4:(s + 1) * n // 4].to(torch.bfloat16))
        finish_layer(Path(tmp), "", n, n // 4, d_model=d, dtype="bfloat16")
        store = open_layer(tmp)
        with Prefetcher(store.batches(B, in_memory=True), dev, depth=4) as feed:
            ours, chosen = saelens_trainer(False, feed)
            stock = saelens_trainer(True, cycle())[0]
            ours_mem = saelens_trainer(False, cycle())[0]
            steps = {"ours": (ours.step, feed), "ours-mem": (ours_mem.step, ours_mem.data_provider),
                     "saelens": (stock.step, stock.data_provider)}
            if SparseCoder is not None:
                torch.manual_seed(0)
                sc = SparseCoder(d, SparseCoderConfig(num_latents=F, k=k), device=dev)
                opt = torch.optim.Adam(sc.parameters(), lr=3e-4)

                def sp_step(batch):
                    with cast():
                        out = sc(batch)
                    out.fvu.backward()
                    opt.step()
                    opt.zero_grad()

                steps["sparsify"] = (sp_step, cycle())
            for step, batches in steps.values():  # warm-up
                step(next(batches))
                step(next(batches))
            ours_time, wait0 = 0.0, feed.wait_s
            for _ in range(args.rounds):
                for name, (step, batches) in steps.items():
                    t = time.perf_counter()
                    rates[name].append(timed(step, batches))
                    if name == "ours":
                        ours_time += time.perf_counter() - t
            share = (feed.wait_s - wait0) / ours_time
    med = {name: statistics.median(r) for name, r in rates.items() if r}
    print(f"device {dev}, d_in {d}, d_sae {F}, k {k}, batch {B}, {args.rounds} rounds x {args.steps} steps, "
          f"{torch.get_num_threads()} threads, bf16 autocast {amp}; our kernels {chosen}; medians over the rounds")
    print(f"ours (store feed):                           {med['ours']:9.0f} tok/s")
    print(f"ours (same tensors as the others):           {med['ours-mem']:9.0f} tok/s  (the feed's thread shares "
          f"the cores: ratio {med['ours'] / med['ours-mem']:.2f})")
    print(f"SAELens TopKTrainingSAE (tensors on device): {med['saelens']:9.0f} tok/s  "
          f"ratio ours/SAELens {med['ours'] / med['saelens']:.2f}")
    if "sparsify" in med:
        print(f"sparsify SparseCoder (torch Adam):           {med['sparsify']:9.0f} tok/s  "
              f"ratio ours/sparsify {med['ours'] / med['sparsify']:.2f} (store feed), "
              f"{med['ours-mem'] / med['sparsify']:.2f} (same tensors)")
    print(f"feed share of our step time (waiting for a batch): {share:.1%}")


if __name__ == "__main__":
    main()
