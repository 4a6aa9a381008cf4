"""The spectrum-matched floor: random-init activations given the real model's covariance.

A random-init network's activations are near-isotropic, so each crosscoder latent on them buys little
reconstruction and a decoder-norm penalty zeroes its decoder whether or not the feature is "absent".
Whitening the random-init activations and colouring them with the real model's covariance
(``x -> (x - mu_r) C_r^{-1/2} C_a^{1/2} + mu_a``, both fitted on the training units) keeps whatever
structure the random network has beyond its second moments while giving it exactly the real model's
spectrum: a floor whose latents have as much variance to explain as the real model's.
"""

from __future__ import annotations

import numpy as np
import torch

from saematch.crosscoder.data import AffineSource, Source
from saematch.errors import SaematchError

EIG_FLOOR = 1e-6  # eigenvalues below this share of the largest are treated as this (whitening stays finite)


def moments(source: Source, rows: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` of ``source`` over the units ``rows`` (float64, streamed)."""
    d = source.d_model
    s, ss, n = np.zeros(d), np.zeros((d, d)), 0
    for x in source.iter_take(rows, batch):
        x = x.double().numpy()
        s += x.sum(0)
        ss += x.T @ x
        n += len(x)
    if n < 2:
        raise SaematchError(f"{source.root}: {n} training units, too few for a covariance")
    mu = s / n
    return mu, ss / n - np.outer(mu, mu)


def _sym_power(C: np.ndarray, p: float) -> np.ndarray:
    w, V = np.linalg.eigh((C + C.T) / 2)
    w = np.maximum(w, EIG_FLOOR * max(float(w.max()), 1e-300))
    return (V * w ** p) @ V.T


def spectrum_matched(random_src: Source, real_src: Source, rows: np.ndarray) -> AffineSource:
    """``random_src`` whitened and coloured so that, over ``rows``, its mean and covariance are ``real_src``'s."""
    if random_src.d_model != real_src.d_model or random_src.n_rows != real_src.n_rows:
        raise SaematchError(f"the spectrum-matched floor needs the random-init and real activations of one layer "
                            f"(same units, same width), got {random_src.n_rows} x {random_src.d_model} and "
                            f"{real_src.n_rows} x {real_src.d_model}")
    mu_r, C_r = moments(random_src, rows)
    mu_a, C_a = moments(real_src, rows)
    W = _sym_power(C_r, -0.5) @ _sym_power(C_a, 0.5)
    b = mu_a - mu_r @ W
    return AffineSource(random_src, torch.from_numpy(W).float(), torch.from_numpy(b).float())
