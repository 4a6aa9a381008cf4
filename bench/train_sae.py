"""SAE training throughput, same stream and shapes, one run:

- ours: SAELens ``SAETrainer`` with our sparse TopK training SAE (``sae/sparse_topk.py``),
  fed by the activation store;
- SAELens' own ``TopKTrainingSAE`` in the same trainer, on in-memory tensors;
- EleutherAI sparsify (PyPI ``eai-sparsify``) if installed.

    python bench/train_sae.py [--steps 30] [--threads 2]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from saematch.activations.store import finish_layer, open_layer, write_shard
from saematch.sae.architectures.topk import TopKSAEConfig as SAEConfig
from saematch.sae.train import _make_trainer, make_training_sae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d, B = args.d_in, 1024
    cfg = SAEConfig(expansion=8, k=32, batch_size=B, training_tokens=B * args.steps, lr=3e-4)
    n = B * 16
    x = torch.randn(n, d)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(4):
            write_shard(Path(tmp), k, x[k * n // 4:(k + 1) * n // 4].to(torch.bfloat16))
        finish_layer(Path(tmp), "", n, n // 4, d_model=d, dtype="bfloat16")
        store = open_layer(tmp)
        feed = store.batches(B)
        t = time.perf_counter()
        for _ in range(args.steps):
            next(feed)
        feed_s = time.perf_counter() - t

        def run(data, stock: bool = False) -> float:
            torch.manual_seed(0)
            sae = make_training_sae(cfg, d)
            if stock:
                import sae_lens as sl

                sae = sl.TopKTrainingSAE(sae.cfg)
            trainer = _make_trainer(cfg, sae, data)
            next_batch = next(trainer.data_provider)
            trainer.step(next_batch)  # warm-up
            t = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(next(trainer.data_provider))
            return B * args.steps / (time.perf_counter() - t)

        ours = run(store.batches(B))
        mem = [x[i * B % n:(i * B % n) + B] for i in range(args.steps + 2)]
        saelens = run(iter(mem), stock=True)
    print(f"d_in {d}, d_sae {8 * d}, k 32, batch {B}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"ours (store feed):          {ours:8.0f} tok/s")
    print(f"SAELens TopKTrainingSAE (in-memory tensors): {saelens:8.0f} tok/s  ratio ours/SAELens {ours / saelens:.2f}")
    print(f"data feed share of step time: {feed_s / (B * args.steps / ours):.1%}")
    try:
        from sparsify import SparseCoder, SparseCoderConfig

        sc = SparseCoder(d, SparseCoderConfig(expansion_factor=8, k=32), device="cpu")
        opt = torch.optim.Adam(sc.parameters(), lr=3e-4)
        for i in range(-1, args.steps):  # step -1 is the warm-up, as for the others
            if i == 0:
                t = time.perf_counter()
            out = sc(mem[max(i, 0)])
            out.fvu.backward()
            opt.step()
            opt.zero_grad()
        sp_rate = B * args.steps / (time.perf_counter() - t)
        print(f"sparsify SparseCoder:        {sp_rate:8.0f} tok/s  ratio ours/sparsify {ours / sp_rate:.2f}")
    except ImportError:
        print("sparsify not installed (pip install eai-sparsify --no-deps) : skipped")


if __name__ == "__main__":
    main()
