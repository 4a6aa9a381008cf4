"""Steering transfer: vectors built in A, mapped into B, added to B's residual stream.

Vectors (per concept group):

* ``diffmean``: mean activation of units whose recent context holds a concept
  keyword minus the mean of the other units (training units only);
* ``feature``: the decoder direction of the matched pair whose A feature is the
  most concept-selective (mean activation on concept units minus elsewhere).

For each, B's *native* vector (the same recipe on B's activations, or the
matched B feature's decoder row) is the ceiling; the *mapped* vector is A's
carried by the map's linear part (``v @ W``, no bias).  Floors: random
directions, isotropic and drawn from B's own activation covariance (fresh per
concept); and named floor vectors the caller builds (another concept's mapped
vector, the random-init or token-identity pipeline's mapped vector).  Steering compares directions: every vector is
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
                    seed: int = 0, return_runs: bool = False) -> Any:
    """``[n', len(prefix) + length]`` token windows from the given (held-out) runs, seeded.

    ``return_runs``: also return each prompt's index into ``token_ids`` (to group prompts by document).
    """
    starts = [(d, s) for d, ids in enumerate(token_ids) for s in range(0, len(ids) - length + 1, length)]
    if not starts:
        raise SaematchError(f"no held-out document has {length} tokens for a steering prompt")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(starts), size=min(n, len(starts)), replace=False)
    rows = [list(prefix) + list(token_ids[starts[i][0]][starts[i][1]:starts[i][1] + length]) for i in sorted(pick)]
    prompts = torch.tensor(rows, dtype=torch.long)
    return (prompts, np.array([starts[i][0] for i in sorted(pick)], dtype=np.int64)) if return_runs else prompts


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


def cov_random_directions(XB_ND: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, D]`` draws from ``N(0, Cov(XB))``: random directions that live where B's activations vary.

    Isotropic noise mostly points where B's activations (and so its logits' sensitivity) are flat, which
    makes it an easy floor; drawing from B's own covariance gives a floor a mapped vector must beat honestly.
    """
    Xc = np.asarray(XB_ND, np.float64) - np.asarray(XB_ND, np.float64).mean(0)
    # z @ Xc / sqrt(N - 1) has covariance Xc^T Xc / (N - 1), the sample covariance, without forming it
    return rng.standard_normal((n, Xc.shape[0])) @ Xc / np.sqrt(max(Xc.shape[0] - 1, 1))


def grouped_ci(values_P: np.ndarray, groups_P: Optional[np.ndarray], n_boot: int = 1000, seed: int = 0,
               level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a mean over prompts, resampling whole groups (documents) with replacement."""
    v = np.asarray(values_P, np.float64)
    g = np.arange(len(v)) if groups_P is None else np.asarray(groups_P)
    uniq, inv = np.unique(g, return_inverse=True)
    if len(uniq) < 2:
        return float("nan"), float("nan")
    sums, counts = np.bincount(inv, v, len(uniq)), np.bincount(inv, None, len(uniq))
    pick = np.random.default_rng(seed).integers(0, len(uniq), (n_boot, len(uniq)))
    stats = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def steering_transfer(
    adapter_b: Any, prompts_PT: torch.Tensor, layer_b: int, vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    token_sets: dict[str, np.ndarray], ref_norm: float, scales: Sequence[float], n_random: int,
    eval_positions: int, batch: int = 64, seed: int = 0, meta: Optional[dict[tuple[str, str], dict]] = None,
    XB_cov: Optional[np.ndarray] = None, floors: Optional[dict[tuple[str, str], dict[str, np.ndarray]]] = None,
    prompt_groups: Optional[np.ndarray] = None,
) -> pd.DataFrame:
    """One row per (kind, concept, scale): native, mapped, random and floor effects, success with chance rates.

    ``vectors[(kind, concept)] = (native_D, mapped_D)``, both in B's space.  Random directions: isotropic
    and, when ``XB_cov`` (B's training activations) is given, drawn from B's covariance; fresh draws per
    concept, all rescaled to the same norm.  ``floors[(kind, concept)]`` names further vectors in B's space
    (another concept's mapped vector, the random-init or token-identity pipeline's vector), each a column
    ``effect_<name>`` and ``beats_<name>``.  ``success`` (mapped beats all ``n_random`` random vectors of
    the reported floor) has chance ``1 / (n_random + 1)`` when mapped is no better than them; the
    per-prompt rate (mapped above the random mean) has chance about 0.5.  CIs resample prompts grouped by
    ``prompt_groups`` (their documents; default: each prompt its own group).
    ``meta[(kind, concept)]`` adds columns to that vector's rows (e.g. the chosen features).
    """
    d = adapter_b.d_model
    keys = [k for k in vectors if len(token_sets.get(k[1], ())) > 0]
    for k in vectors:
        if k not in keys:
            log.warning("concept '%s' has no tokens in B's vocabulary; skipped", k[1])
    rng = np.random.default_rng(seed)
    floors = floors or {}
    names = sorted({f for k in keys for f in floors.get(k, {})})
    rnd_kinds = ["iso"] + (["cov"] if XB_cov is not None else [])
    blocks, index = [], {}
    for k in keys:
        index[k] = len(blocks)
        blocks.append(_unit(vectors[k][0]))
        blocks.append(_unit(vectors[k][1]))
        for f in names:
            blocks.append(_unit(floors[k][f]) if f in floors.get(k, {}) else np.full(d, np.nan))
        blocks += list(_unit_rows(rng.standard_normal((n_random, d))))
        if XB_cov is not None:
            blocks += list(_unit_rows(cov_random_directions(XB_cov, n_random, rng)))
    units = np.stack(blocks) if blocks else np.zeros((0, d))
    ok = ~np.isnan(units).any(1)
    rows = []
    for scale in scales:
        V = torch.from_numpy(np.nan_to_num(units) * scale * ref_norm).float()
        eff = steering_effects(adapter_b, prompts_PT, layer_b, V[torch.from_numpy(ok)], token_sets, eval_positions,
                               batch)
        full = {c: np.full((len(units), prompts_PT.shape[0]), np.nan) for c in eff}
        for c in eff:
            full[c][ok] = eff[c]
        for kind, concept in keys:
            e, j = full[concept], index[(kind, concept)]
            nat, mapped = e[j], e[j + 1]
            row = {"kind": kind, "concept": concept, "scale": float(scale), "norm": float(scale * ref_norm),
                   "effect_native": float(nat.mean()), "effect_mapped": float(mapped.mean())}
            row["effect_mapped_lo"], row["effect_mapped_hi"] = grouped_ci(mapped, prompt_groups, seed=seed)
            for i, f in enumerate(names):
                fe = e[j + 2 + i]
                row[f"effect_{f}"] = float(fe.mean()) if np.isfinite(fe).all() else float("nan")
                row[f"beats_{f}"] = bool(mapped.mean() > fe.mean()) if np.isfinite(fe).all() else None
            base = j + 2 + len(names)
            for r, rk in enumerate(rnd_kinds):
                rand = e[base + r * n_random: base + (r + 1) * n_random]
                suffix = "" if rk == rnd_kinds[-1] else f"_{rk}"  # the strongest random floor has the plain name
                per_prompt = (mapped > rand.mean(0)).astype(float)
                lo, hi = grouped_ci(per_prompt, prompt_groups, seed=seed)
                row.update({f"effect_random{suffix}": float(rand.mean()),
                            f"effect_random{suffix}_std": float(rand.mean(1).std()),
                            f"effect_random{suffix}_max": float(rand.mean(1).max()),
                            f"success{suffix}": bool(mapped.mean() > rand.mean(1).max()),
                            f"success_rate{suffix}": float(per_prompt.mean()),
                            f"success_rate{suffix}_lo": lo, f"success_rate{suffix}_hi": hi})
            row["random_floor"] = rnd_kinds[-1]
            row["success_chance"] = 1.0 / (n_random + 1)
            v_nat, v_map = vectors[(kind, concept)]
            row.update({
                "ratio": float(mapped.mean() / nat.mean()) if nat.mean() != 0 else float("nan"),
                "cos_mapped_native": float(_unit(v_nat) @ _unit(v_map)),
                "raw_norm_ratio": float(np.linalg.norm(v_map) / np.linalg.norm(v_nat)),
                "n_prompts": int(prompts_PT.shape[0]), "n_tokens": int(len(token_sets[concept])),
                "n_prompt_docs": int(len(np.unique(prompt_groups))) if prompt_groups is not None
                else int(prompts_PT.shape[0]),
                **(meta or {}).get((kind, concept), {}),
            })
            floor_cols = [f"effect_{f}" for f in names if np.isfinite(row[f"effect_{f}"])] + ["effect_random_max"]
            best = max(floor_cols, key=lambda c: row[c])
            row["strongest_floor"], row["effect_strongest_floor"] = best[len("effect_"):], row[best]
            row["beats_strongest_floor"] = bool(row["effect_mapped"] > row[best])
            rows.append(row)
    return pd.DataFrame(rows)


def _unit_rows(M: np.ndarray) -> np.ndarray:
    return M / np.linalg.norm(M, axis=1, keepdims=True)
