"""Planted data for crosscoders: two 'models' of different width built from known sparse features.

Some features are present in both models (each with its own direction in each model), some in one
model only.  The decoder-penalty rule (:mod:`saematch.crosscoder.rule`) and the tests train on it, so
it lives in the package: the rule's planted case is part of the code, fixed before any real run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

D_A, D_B, SHARED, PRIV_A, PRIV_B = 24, 32, 16, 8, 8


@dataclass(frozen=True)
class Planted:
    """xA ``[n, D_A]``, xB ``[n, D_B]``; GA ``[SHARED + PRIV_A, D_A]`` (rows: shared then A-private features),
    GB ``[SHARED + PRIV_B, D_B]`` (shared then B-private), unit-norm directions."""

    xA: np.ndarray
    xB: np.ndarray
    GA: np.ndarray
    GB: np.ndarray

    def __iter__(self):  # unpacks as (xA, xB, GA, GB)
        return iter((self.xA, self.xB, self.GA, self.GB))

    def truth(self) -> list[tuple[str, int, int]]:
        """(planted class, model index, row of that model's G) for every planted feature, each counted in the
        model that has it (a shared feature is listed once, under A)."""
        out = [("shared" if j < SHARED else "a_only", 0, j) for j in range(SHARED + PRIV_A)]
        return out + [("b_only", 1, j) for j in range(SHARED, SHARED + PRIV_B)]


def planted(n: int = 12_000, seed: int = 0, sigma: float = 0.0) -> Planted:
    """Features fire independently with probability 0.06 (about 1.9 per unit: k = 2 fits) at magnitudes in
    [1, 3]; A carries an offset (like a residual stream's mean), B three times A's scale.  ``sigma > 0`` adds
    isotropic noise of that per-dimension standard deviation (times 3 in B), the unstructured share of
    variance that leaves a private feature's latent with a weak decoder in the other model under MSE alone."""
    rng = np.random.default_rng(seed)

    def dirs(f: int, d: int) -> np.ndarray:
        w = rng.standard_normal((f, d))
        return w / np.linalg.norm(w, axis=1, keepdims=True)

    GA, GB = dirs(SHARED + PRIV_A, D_A), dirs(SHARED + PRIV_B, D_B)
    n_feat = SHARED + PRIV_A + PRIV_B
    z = (rng.random((n, n_feat)) < 0.06) * rng.uniform(1, 3, (n, n_feat))
    zA, zB = z[:, :SHARED + PRIV_A], np.concatenate([z[:, :SHARED], z[:, SHARED + PRIV_A:]], 1)
    xA = zA @ GA + 0.01 * rng.standard_normal((n, D_A)) + 0.5
    xB = 3.0 * (zB @ GB) + 0.01 * rng.standard_normal((n, D_B))
    if sigma > 0:
        noise = np.random.default_rng(seed + 100)
        xA = xA + sigma * noise.standard_normal(xA.shape)
        xB = xB + 3 * sigma * noise.standard_normal(xB.shape)
    return Planted(xA.astype(np.float32), xB.astype(np.float32), GA, GB)


def best_latents(W_dec: list[np.ndarray], data: Planted) -> list[tuple[str, int, float]]:
    """(planted class, best latent, cosine) per planted feature, by decoder cosine in the model that has it."""
    out = []
    for cls, m, j in data.truth():
        W = W_dec[m]
        G = data.GA if m == 0 else data.GB
        n = np.linalg.norm(W, axis=1)
        C = (W / np.where(n > 0, n, 1.0)[:, None]) @ G[j]
        out.append((cls, int(C.argmax()), float(C.max())))
    return out


def private_recall(W_dec: list[np.ndarray], classes: np.ndarray, data: Planted, min_cos: float = 0.9) -> float:
    """Share of the planted private features found *as private*: some latent classed exclusive to the model that
    has the feature has a decoder within ``min_cos`` cosine of it (the recall of exclusive features)."""
    hits = []
    for cls, m, j in data.truth():
        if cls == "shared":
            continue
        sel = np.nonzero(classes == cls)[0]
        W = W_dec[m][sel]
        G = data.GA if m == 0 else data.GB
        n = np.linalg.norm(W, axis=1)
        hits.append(bool(len(sel)) and float(((W / np.where(n > 0, n, 1.0)[:, None]) @ G[j]).max()) >= min_cos)
    return float(np.mean(hits))
