"""Adapter (body only, stops after the deepest layer) vs full model with output_hidden_states.

Same windows, same model, same dtype, in one run.  Prints tokens/s and the ratio.
    python bench/extract.py [--model smollm2-135m] [--layer 14] [--batches 6]
"""

import argparse
import time
from pathlib import Path

import torch

from saematch.adapter import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=None, help="deepest layer needed (default: mid-depth)")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "saematch"))
    args = ap.parse_args()
    adapter = load_model(args.model, Path(args.cache), dtype="auto")
    layer = args.layer if args.layer is not None else adapter.n_layers // 2
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 1000, (8, 128), generator=g) for _ in range(args.batches)]
    adapter.resid_post(batches[0], [layer])  # warm-up
    with torch.inference_mode():
        adapter.model(input_ids=batches[0], output_hidden_states=True)

    t = time.perf_counter()
    for b in batches:
        adapter.resid_post(b, [layer])
    ours = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            adapter.model(input_ids=b, output_hidden_states=True).hidden_states[layer + 1]
    base = time.perf_counter() - t
    n = sum(b.numel() for b in batches)
    print(f"model {args.model}: {adapter.n_layers} blocks, deepest layer needed {layer}, dtype {adapter.model.dtype}")
    print(f"adapter (body, stop at L{layer}): {n / ours:8.0f} tokens/s")
    print(f"full model, output_hidden_states: {n / base:8.0f} tokens/s")
    print(f"ratio: {base / ours:.2f}x")


if __name__ == "__main__":
    main()
