"""Steering transfer: vectors built in A, mapped into B, added to B's residual stream.

Vectors (per concept group):

* ``diffmean``: mean activation of units whose recent context holds a concept
  keyword minus the mean of the other units (training units only);
* ``feature``: the decoder direction of the matched pair whose A feature is the
  most concept-selective (mean activation on concept units minus elsewhere).

For each, B's *native* vector (the same recipe on B's activations, or the
matched B feature's decoder row) is the ceiling; the *mapped* vector is A's
carried by the map's linear part (``v @ W``, no bias); *random* Gaussian
directions are the floor.  Steering compares directions: every vector is
rescaled to norm ``scale * r``, with ``r`` the mean residual norm of B at that
layer, and added at every position of block ``layer_b``'s output.

Effect: on held-out prompts, the change in ``log sum_{t in T} p(t)``, the
next-token log-mass of the concept's tokens ``T`` (first token of each keyword,
lower-case and capitalised, with and without a leading space, in B's
tokenizer), averaged over the last ``eval_positions`` positions of each prompt.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def concept_token_ids(tokenizer: Any, keywords: Iterable[str]) -> np.ndarray:
    """Sorted unique first tokens of each keyword variant (``kw``, ``Kw``, `` kw``, `` Kw``)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids: set[int] = set()
    for kw in keywords:
        for form in {kw, kw.capitalize()}:
            for text in (form, " " + form):
                toks = tokenizer(text, add_special_tokens=False)["input_ids"]
                if toks and toks[0] not in special:
                    ids.add(int(toks[0]))
    return np.array(sorted(ids), dtype=np.int64)


def diff_of_means(X_ND: np.ndarray, mask_N: np.ndarray) -> np.ndarray:
    """Mean of rows in ``mask`` minus mean of the others."""
    mask = np.asarray(mask_N, bool)
    if mask.all() or not mask.any():
        raise SaematchError("a difference of means needs units both inside and outside the concept")
    return X_ND[mask].mean(0) - X_ND[~mask].mean(0)


@torch.no_grad()
def selective_features(sae_a: Any, XA_ND: np.ndarray, masks_CN: np.ndarray, feature_a: np.ndarray,
                       batch: int = 2048) -> np.ndarray:
    """For each concept row of ``masks``, the index into ``feature_a`` of the most selective matched feature."""
    masks = torch.from_numpy(np.asarray(masks_CN, np.float64))
    inside = torch.zeros(masks.shape[0], 0, dtype=torch.float64)
    total = None
    dtype = getattr(sae_a, "dtype", torch.float32)
    for s in range(0, XA_ND.shape[0], batch):
        f = sae_a.encode(torch.from_numpy(np.ascontiguousarray(XA_ND[s:s + batch])).to(dtype)).double().cpu()
        part = masks[:, s:s + batch] @ f
        inside = part if inside.shape[1] == 0 else inside + part
        total = f.sum(0) if total is None else total + f.sum(0)
    n_in = masks.sum(1, keepdim=True).clamp_min(1)
    n_out = (masks.shape[1] - masks.sum(1, keepdim=True)).clamp_min(1)
    score = inside / n_in - (total - inside) / n_out  # [C, F]
    return score[:, torch.from_numpy(np.array(feature_a, dtype=np.int64))].argmax(1).numpy()


def heldout_prompts(token_ids: Sequence[np.ndarray], prefix: Sequence[int], n: int, length: int,
                    seed: int = 0) -> torch.Tensor:
    """``[n', len(prefix) + length]`` token windows from the given (held-out) documents, seeded."""
    starts = [(d, s) for d, ids in enumerate(token_ids) for s in range(0, len(ids) - length + 1, length)]
    if not starts:
        raise SaematchError(f"no held-out document has {length} tokens for a steering prompt")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(starts), size=min(n, len(starts)), replace=False)
    rows = [list(prefix) + list(token_ids[starts[i][0]][starts[i][1]:starts[i][1] + length]) for i in sorted(pick)]
    return torch.tensor(rows, dtype=torch.long)


def _log_mass(lp_BTV: torch.Tensor, token_sets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per set: log total probability of its tokens, ``[B, T]``."""
    return {k: torch.logsumexp(lp_BTV[..., ids], dim=-1) for k, ids in token_sets.items()}


def steering_effects(adapter: Any, prompts_PT: torch.Tensor, layer: int, vectors_KD: torch.Tensor,
                     token_sets: dict[str, np.ndarray], eval_positions: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Per token set: ``[K, P]`` change in log-mass (mean over the last positions) from adding each vector."""
    sets = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in token_sets.items() if len(v)}
    P = prompts_PT.shape[0]
    base = {k: v.mean(-1) for k, v in _log_mass(adapter.next_token_logprobs(prompts_PT, keep_last=eval_positions), sets).items()}
    out = {k: torch.zeros(vectors_KD.shape[0], P) for k in sets}
    pairs = [(k, p) for k in range(vectors_KD.shape[0]) for p in range(P)]
    for s in range(0, len(pairs), batch):
        chunk = pairs[s:s + batch]
        ks, ps = torch.tensor([c[0] for c in chunk]), torch.tensor([c[1] for c in chunk])
        lp = adapter.next_token_logprobs(prompts_PT[ps], layer=layer, add=vectors_KD[ks][:, None, :].float(),
                                         keep_last=eval_positions)
        for name, m in _log_mass(lp, sets).items():
            out[name][ks, ps] = m.mean(-1) - base[name][ps]
    return {k: v.numpy() for k, v in out.items()}


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0 or not np.isfinite(n):
        raise SaematchError("a steering vector has zero or non-finite norm")
    return v / n


def steering_transfer(
    adapter_b: Any, prompts_PT: torch.Tensor, layer_b: int, vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    token_sets: dict[str, np.ndarray], ref_norm: float, scales: Sequence[float], n_random: int,
    eval_positions: int, batch: int = 64, seed: int = 0, meta: Optional[dict[tuple[str, str], dict]] = None,
) -> pd.DataFrame:
    """One row per (kind, concept, scale): native, mapped and random effects, success and ratio.

    ``vectors[(kind, concept)] = (native_D, mapped_D)``, both in B's space.  Random
    directions are shared by all concepts at a scale (the floor depends on norm only).
    ``meta[(kind, concept)]`` adds columns to that vector's rows (e.g. the chosen features).
    """
    d = adapter_b.d_model
    keys = [k for k in vectors if len(token_sets.get(k[1], ())) > 0]
    for k in vectors:
        if k not in keys:
            log.warning("concept '%s' has no tokens in B's vocabulary; skipped", k[1])
    R = _unit_rows(np.random.default_rng(seed).standard_normal((n_random, d)))
    dirs = [_unit(vectors[k][i]) for k in keys for i in (0, 1)]
    units = np.concatenate([np.stack(dirs) if dirs else np.zeros((0, d)), R])
    rows = []
    for scale in scales:
        V = torch.from_numpy(units * scale * ref_norm).float()
        eff = steering_effects(adapter_b, prompts_PT, layer_b, V, token_sets, eval_positions, batch)
        for j, (kind, concept) in enumerate(keys):
            e = eff[concept]
            nat, mapped, rand = e[2 * j], e[2 * j + 1], e[2 * len(keys):]
            v_nat, v_map = vectors[(kind, concept)]
            rows.append({
                "kind": kind, "concept": concept, "scale": float(scale), "norm": float(scale * ref_norm),
                "effect_native": float(nat.mean()), "effect_mapped": float(mapped.mean()),
                "effect_random": float(rand.mean()), "effect_random_std": float(rand.mean(1).std()),
                "effect_random_max": float(rand.mean(1).max()),
                "success": bool(mapped.mean() > rand.mean(1).max()),
                "success_rate": float(np.mean(mapped > rand.mean(0))),
                "ratio": float(mapped.mean() / nat.mean()) if nat.mean() != 0 else float("nan"),
                "cos_mapped_native": float(_unit(v_nat) @ _unit(v_map)),
                "raw_norm_ratio": float(np.linalg.norm(v_map) / np.linalg.norm(v_nat)),
                "n_prompts": int(prompts_PT.shape[0]), "n_tokens": int(len(token_sets[concept])),
                **(meta or {}).get((kind, concept), {}),
            })
    return pd.DataFrame(rows)


def _unit_rows(M: np.ndarray) -> np.ndarray:
    return M / np.linalg.norm(M, axis=1, keepdims=True)
