"""v(S) for every subset of a prompt's words: the target's log-odds with the words outside S masked.

A masked word's tokens get a baseline embedding at their positions: the mean input embedding over
the train documents (weighted by token frequency), a zero vector, or the pad (else unk, else eos)
token's embedding.  All 2^n masked inputs of a prompt run through the model in batches of the same
length (one prompt, no padding).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def baseline_vector(adapter: Any, kind: str, tokenizer: Any, train_ids: list[np.ndarray]) -> torch.Tensor:
    """The embedding ``[d]`` a masked token gets, as the model's body receives it."""
    if kind == "zero":
        return torch.zeros(adapter.d_model)
    if kind == "pad":
        for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
            tid = getattr(tokenizer, name, None)
            if tid is not None:
                return adapter.embed_tokens(torch.tensor([int(tid)]))[0].float().cpu()
        raise SaematchError(f"interactions.baseline 'pad': the tokenizer of '{adapter.name}' has no pad, unk or eos token")
    if kind == "mean":
        ids = np.concatenate(train_ids) if train_ids else np.zeros(0, np.int64)
        if len(ids) == 0:
            raise SaematchError("interactions.baseline 'mean': the train documents have no tokens")
        uniq, counts = np.unique(ids, return_counts=True)
        emb = adapter.embed_tokens(torch.as_tensor(uniq)).float().cpu()
        w = torch.as_tensor(counts, dtype=torch.float32)
        return (w[:, None] * emb).sum(0) / w.sum()
    raise SaematchError(f"interactions.baseline: unknown baseline '{kind}'")


def subset_masks(n_tokens: int, positions: tuple[np.ndarray, ...], subsets: np.ndarray) -> torch.Tensor:
    """``[len(subsets), T]``: True where a token belongs to a word outside the subset (bit i: word i present)."""
    mask = torch.zeros(len(subsets), n_tokens, dtype=torch.bool)
    for i, pos in enumerate(positions):
        absent = torch.as_tensor((subsets >> i) & 1 == 0)
        if len(pos):
            mask[:, torch.as_tensor(pos)] |= absent[:, None]
    return mask


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """log p / (1 - p) from log p, stable near p = 1."""
    return logp - torch.log(-torch.expm1(logp.clamp(max=-1e-12)))


@dataclass(frozen=True)
class Values:
    """v over every subset for each prompt ``[P, 2^n]``, with the cost of computing it."""

    v_PX: np.ndarray
    forwards: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.forwards / self.seconds if self.seconds > 0 else float("nan")


def prompt_values(adapter: Any, ids_T: np.ndarray, positions: tuple[np.ndarray, ...], target: int,
                  baseline_D: torch.Tensor, batch_size: int) -> np.ndarray:
    """v(S) ``[2^n]`` for one prompt (float64)."""
    n = len(positions)
    subsets = np.arange(1 << n, dtype=np.int64)
    ids = torch.as_tensor(ids_T)
    out = np.empty(1 << n, np.float64)
    for s in range(0, len(subsets), batch_size):
        chunk = subsets[s:s + batch_size]
        logp = adapter.masked_next_logprobs(ids, subset_masks(len(ids_T), positions, chunk), baseline_D)
        out[s:s + len(chunk)] = log_odds(logp[:, target].double()).cpu().numpy()
    return out


def all_values(adapter: Any, prompts: list[Any], key: str, baseline_D: torch.Tensor, batch_size: int) -> Values:
    """v for every prompt, read with model key ``key`` (a control variant reads its source model's inputs)."""
    t = time.perf_counter()
    rows = [prompt_values(adapter, p.ids[key], p.positions[key], p.target[key], baseline_D, batch_size) for p in prompts]
    v = np.stack(rows)
    return Values(v, int(v.size), time.perf_counter() - t)
