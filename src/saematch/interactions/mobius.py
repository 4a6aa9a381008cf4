"""AND and OR interactions of a set function v over n input variables.

A subset S of the n variables is the integer whose bit i is set when variable i is in S;
``v_X`` holds v at every subset, ``X = 2^n`` in that order.

* AND interactions (the Harsanyi dividends): I(S) = sum over T in S of (-1)^{|S|-|T|} v(T), so that
  v(S) = sum over T in S of I(T) and sum over all S of I(S) = v(N) (efficiency).  Computed by the fast
  Moebius transform in O(n 2^n).
* OR interactions: I_or(S) = -sum over T in S of (-1)^{|S|-|T|} v(N \\ T) for S non-empty and
  I_or(empty) = v(empty), so that v(S) = I_or(empty) + sum over T meeting S, T non-empty, of I_or(T).
* The sparsifying split (Chen, Lou et al., ICLR 2024, after Li & Zhang 2023): v is first corrected
  by offsets q(S) with |q(S)| <= tau (small noise), then split as v_and = (v + q) / 2 + gamma,
  v_or = (v + q) / 2 - gamma, with gamma and q fitted by gradient descent to minimise the L1 norm of
  the AND interactions of v_and plus the OR interactions of v_or (the empty set excluded).

Everything works on a leading batch dimension, so the splits of many prompts and models are
fitted together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def n_vars(n_subsets: int) -> int:
    n = int(n_subsets).bit_length() - 1
    if n < 0 or 1 << n != n_subsets:
        raise ValueError(f"a set function over n variables has 2^n values, got {n_subsets}")
    return n


def mobius(v_BX: torch.Tensor) -> torch.Tensor:
    """AND interactions of ``v`` (``[..., 2^n]``), differentiable; O(n 2^n)."""
    shape = v_BX.shape
    n = n_vars(shape[-1])
    x = v_BX.reshape(-1, shape[-1])
    for i in range(n):
        # bit i of the subset index: view as [batch, high bits, bit i, low bits]
        y = x.reshape(x.shape[0], -1, 2, 1 << i)
        x = torch.stack((y[:, :, 0], y[:, :, 1] - y[:, :, 0]), dim=2).reshape(x.shape)
    return x.reshape(shape)


def zeta(i_BX: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mobius`: v(S) = sum of I(T) over T in S."""
    shape = i_BX.shape
    n = n_vars(shape[-1])
    x = i_BX.reshape(-1, shape[-1])
    for i in range(n):
        y = x.reshape(x.shape[0], -1, 2, 1 << i)
        x = torch.stack((y[:, :, 0], y[:, :, 1] + y[:, :, 0]), dim=2).reshape(x.shape)
    return x.reshape(shape)


def complement(v_BX: torch.Tensor) -> torch.Tensor:
    """``u(S) = v(N \\ S)``: the complement of index S is its bitwise complement, i.e. the reversed order."""
    return torch.flip(v_BX, dims=(-1,))


def or_interactions(v_BX: torch.Tensor) -> torch.Tensor:
    """OR interactions of ``v`` (see the module doc)."""
    out = -mobius(complement(v_BX))
    out[..., 0] = v_BX[..., 0]
    return out


def or_values(i_BX: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`or_interactions`."""
    m = -i_BX.clone()
    m[..., 0] = 0
    m[..., 0] = i_BX[..., 0] - m.sum(-1)  # the sum of the Moebius terms of u is u(N) = v(empty)
    return complement(zeta(m))


def orders(n: int) -> np.ndarray:
    """|S| of every subset index."""
    idx = np.arange(1 << n)
    return np.array([bin(int(s)).count("1") for s in idx], dtype=np.int64)


@dataclass(frozen=True)
class AndOrSplit:
    """The fitted split of a batch of set functions ``[B, 2^n]``.

    and_BX, or_BX: AND interactions of v_and and OR interactions of v_or (index 0: the empty set, a
    constant); gamma_BX, noise_BX: the fitted split and offsets q; scale_B: |v(N) - v(empty)| (the unit
    of the bound and of the learning rate); l1_start_B / l1_end_B: the L1 norm (empty set excluded) of the
    AND interactions of v itself and of the split's AND plus OR interactions, both over scale.
    """

    and_BX: np.ndarray
    or_BX: np.ndarray
    gamma_BX: np.ndarray
    noise_BX: np.ndarray
    scale_B: np.ndarray
    l1_start_B: np.ndarray
    l1_end_B: np.ndarray


def fit_and_or(v_BX: np.ndarray, steps: int = 1500, lr: float = 0.02, noise_bound: float = 0.02,
               seed: int = 0) -> AndOrSplit:
    """Fit the sparsifying AND-OR split of each row of ``v_BX`` (see the module doc).

    Each row is divided by its own scale |v(N) - v(empty)|, so ``lr`` and ``noise_bound`` are relative;
    the offsets are bounded by ``noise_bound`` through tanh.  Adam, with the learning rate decaying
    linearly to 0 so the L1 objective settles instead of oscillating around its kinks.
    """
    torch.manual_seed(seed)
    v = torch.as_tensor(np.asarray(v_BX, dtype=np.float64))
    scale = (v[:, -1] - v[:, 0]).abs().clamp_min(1e-6)
    x = v / scale[:, None]
    gamma = torch.zeros_like(x, requires_grad=True)
    raw = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([gamma, raw], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / max(steps, 1))

    def parts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = noise_bound * torch.tanh(raw)
        half = 0.5 * (x + q)
        return mobius(half + gamma), or_interactions(half - gamma), q

    for _ in range(steps):
        a, o, _q = parts()
        loss = a[:, 1:].abs().sum() + o[:, 1:].abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        a, o, q = parts()
        l1_start = mobius(x)[:, 1:].abs().sum(-1)
    # a single variable's AND and OR terms are the same function ([i in S]): keep their sum on the AND side, so the
    # split of a singleton is canonical (its L1 norm can only fall) and two models' salient sets compare
    single = torch.tensor([i > 0 and (i & (i - 1)) == 0 for i in range(x.shape[1])])
    a = torch.where(single, a + o, a)
    o = torch.where(single, torch.zeros_like(o), o)
    l1_end = a[:, 1:].abs().sum(-1) + o[:, 1:].abs().sum(-1)
    s = scale[:, None]
    return AndOrSplit((a * s).numpy(), (o * s).numpy(), (gamma.detach() * s).numpy(), (q * s).numpy(),
                      scale.numpy(), l1_start.numpy(), l1_end.numpy())


def salient(and_X: np.ndarray, or_X: np.ndarray, scale: float, rule: str, fraction: float, top_k: int) -> dict:
    """The salient interactions of one split: ``{(kind, S): value}`` with kind 'and' or 'or', the empty set
    excluded; by |I| > fraction * scale, or the top_k by |I| (AND and OR together)."""
    cand = [(("and", s), float(and_X[s])) for s in range(1, len(and_X))]
    cand += [(("or", s), float(or_X[s])) for s in range(1, len(or_X))]
    if rule == "topk":
        cand.sort(key=lambda kv: -abs(kv[1]))
        return {k: val for k, val in cand[:top_k] if val != 0.0}
    return {k: val for k, val in cand if abs(val) > fraction * scale}
