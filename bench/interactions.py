"""Masked forward passes for the interactions stage: all 2^n masked inputs of a prompt batched through
``inputs_embeds`` against a plain loop of single forwards (masked tokens replaced by the pad token id),
same model, prompt and masks, in one run.  Prints passes per second of each, their ratio, and the
largest difference of the target's log-odds between the two paths (both use the pad token's embedding).

    python bench/interactions.py [--model smollm2-135m] [--words 8] [--tokens 32] [--batch-size 64]
    python bench/interactions.py --smoke          # a tiny random-init Llama, seconds, nothing to download
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from saematch.adapter import load_model, load_random_init
from saematch.interactions.values import log_odds, prompt_values, subset_masks

TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
              "max_position_embeddings": 256, "pad_token_id": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--smoke", action="store_true", help="tiny random-init model, few subsets (a seconds-long run)")
    ap.add_argument("--words", type=int, default=8, help="input words: 2^words masked inputs")
    ap.add_argument("--tokens", type=int, default=32, help="prompt length in tokens")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--loop", type=int, default=64, help="subsets timed in the plain loop (the first ones)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "saematch"))
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            (Path(tmp) / "config.json").write_text(json.dumps(TINY_LLAMA))
            adapter = load_random_init(tmp, Path(args.cache), seed=0, dtype="float32")
            args.words, args.tokens, args.loop = min(args.words, 5), min(args.tokens, 16), min(args.loop, 32)
        else:
            adapter = load_model(args.model, Path(args.cache), dtype=args.dtype)
    cfg = adapter.model.config
    vocab = int(getattr(cfg, "vocab_size"))
    pad = getattr(cfg, "pad_token_id", None)
    pad = int(pad) if pad is not None and 0 <= int(pad) < vocab else 0
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (args.tokens,), generator=g)
    # words of one or two tokens, spread over the prompt after a few always-present tokens
    cuts = np.linspace(2, args.tokens - 1, args.words + 1).astype(int)
    positions = tuple(np.arange(cuts[i], min(cuts[i] + 2, cuts[i + 1])) for i in range(args.words))
    target = int(ids[-1])
    base = adapter.embed_tokens(torch.tensor([pad]))[0].float()
    prompt_values(adapter, ids.numpy(), positions, target, base, args.batch_size)  # warm-up
    t = time.perf_counter()
    v = prompt_values(adapter, ids.numpy(), positions, target, base, args.batch_size)
    batched = time.perf_counter() - t
    subsets = np.arange(min(args.loop, 1 << args.words))
    masks = subset_masks(args.tokens, positions, subsets)
    loop_v = []
    t = time.perf_counter()
    for m in masks:
        x = torch.where(m, torch.tensor(pad), ids)
        loop_v.append(float(log_odds(adapter.next_token_logprobs(x[None], keep_last=1)[0, -1, target].double())))
    loop = time.perf_counter() - t
    rate_b, rate_l = len(v) / batched, len(subsets) / loop
    diff = float(np.abs(np.asarray(loop_v) - v[subsets]).max())
    print(f"model {adapter.name}, {args.tokens} tokens, {args.words} words ({len(v)} masked inputs), batch {args.batch_size}")
    print(f"batched inputs_embeds: {rate_b:.1f} passes/s   plain loop of single forwards: {rate_l:.1f} passes/s   "
          f"ratio {rate_b / rate_l:.2f}x   max |delta log-odds| {diff:.2e}")


if __name__ == "__main__":
    main()
