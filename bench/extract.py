"""Adapter (body only, stops after the deepest layer) vs full model with output_hidden_states.

Same windows, same model, same dtype and device, in one run.  Prints tokens/s and the ratio.

    python bench/extract.py [--model smollm2-135m] [--layer 14] [--batches 6]          # real weights, CPU
    python bench/extract.py --random-config gemma-2-2b --device cuda --batch-size 32      # GPU, no weights

``--random-config gemma-2-2b`` writes Gemma-2-2B's architecture (config.json only) into a temporary folder
and builds the model with seeded random weights: throughput needs no weights, and nothing is downloaded.
``--n-layers`` shortens it.  ``--smoke``: a 3-block, 64-wide model of that architecture (seconds, no weights).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from saematch.adapter import load_model, load_random_init
from saematch.devices import resolve, synchronize

GEMMA_2_2B = {  # google/gemma-2-2b's config.json (architecture only)
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
    "initializer_range": 0.02, "intermediate_size": 9216, "max_position_embeddings": 8192,
    "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 256000,
    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
}
CONFIGS = {"gemma-2-2b": GEMMA_2_2B}
SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "query_pre_attn_scalar": 32, "vocab_size": 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--random-config", choices=sorted(CONFIGS), help="random-init model of this architecture")
    ap.add_argument("--n-layers", type=int, default=None, help="with --random-config: keep this many blocks")
    ap.add_argument("--layer", type=int, default=None, help="deepest layer needed (default: mid-depth)")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "saematch"))
    ap.add_argument("--smoke", action="store_true", help="tiny random-init model, for the test that keeps benches running")
    args = ap.parse_args()
    if args.smoke:
        args.random_config, args.n_layers, args.batches, args.batch_size, args.seq = "gemma-2-2b", 3, 2, 2, 32
    dev = resolve(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_config:
            cfg = dict(CONFIGS[args.random_config])
            if args.n_layers:
                cfg["num_hidden_layers"] = args.n_layers
            if args.smoke:
                cfg.update(SMOKE)
            (Path(tmp) / "config.json").write_text(json.dumps(cfg))
            adapter = load_random_init(tmp, Path(args.cache), seed=0, dtype=args.dtype, device=dev)
        else:
            adapter = load_model(args.model, Path(args.cache), dtype=args.dtype, device=dev)
    layer = args.layer if args.layer is not None else adapter.n_layers // 2
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 1000, (args.batch_size, args.seq), generator=g) for _ in range(args.batches)]

    def full(b: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return adapter.model(input_ids=b.to(dev), output_hidden_states=True, use_cache=False).hidden_states[layer + 1]

    def ours(b: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return adapter.resid_post(b, [layer])[layer]

    torch.testing.assert_close(ours(batches[0]), full(batches[0]))  # the same residual
    times = {}
    for name, fn in (("ours", ours), ("full", full)):
        synchronize(dev)
        t = time.perf_counter()
        for b in batches:
            fn(b)
        synchronize(dev)
        times[name] = time.perf_counter() - t
    n = sum(b.numel() for b in batches)
    name = f"{args.random_config} (random init)" if args.random_config else args.model
    print(f"model {name} on {dev}: {adapter.n_layers} blocks, d_model {adapter.d_model}, deepest layer needed "
          f"{layer}, dtype {adapter.model.dtype}, batch {args.batch_size} x {args.seq}")
    print(f"adapter (body, stop at L{layer}):  {n / times['ours']:9.0f} tokens/s")
    print(f"full model, output_hidden_states: {n / times['full']:9.0f} tokens/s")
    print(f"ratio: {times['full'] / times['ours']:.2f}x")


if __name__ == "__main__":
    main()
