"""Sparse SAE feature activations on the aligned units, and per-feature statistics.

Layout of ``RUN/features/<model>/layer_LL/``::

    acts.safetensors   indptr [N+1] int64, indices [nnz] int32, values [nnz] float32 (CSR)
    manifest.json      config hash, n_units, d_sae, nnz (written last)

Encoding streams the activation store in batches; only the sparse result is
kept, never a dense [units x features] matrix.  Every positive activation is
kept, so storage grows with the SAE's true L0; a cap (``max_active``) is a
choice of the user's, and the number of units it cut is returned, logged and
recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from saematch.activations import LayerStore
from saematch.artifacts import Stage, atomic_path, verify_record
from saematch.errors import ArtifactError


@dataclass(frozen=True)
class Encoded:
    """X: CSR ``[n_units, d_sae]`` of latent activations; max_l0: the most active latents on one unit;
    n_truncated: units that had more than ``max_active`` active latents and were cut to the largest."""

    X: sp.csr_matrix
    max_l0: int
    n_truncated: int


@torch.no_grad()
def encode_sparse(sae: Any, store: LayerStore, batch: int = 2048, max_active: Optional[int] = None) -> Encoded:
    """Every positive latent activation of the SAE over the whole store (the largest ``max_active`` if set),
    computed on the SAE's device; only the sparse result comes back to the host."""
    d_sae = int(sae.cfg.d_sae)
    indptr = [np.zeros(1, np.int64)]
    indices, values = [], []
    total, max_l0, cut = 0, 0, 0
    bar = tqdm(total=store.n_rows, desc=f"encode {store.root.parent.name}/{store.root.name}", unit="unit", disable=None)
    for x in store.iter_rows(0, store.n_rows, batch):
        f = sae.encode(x.to(sae.W_enc.device, sae.W_enc.dtype, non_blocking=True)).float()
        counts = (f > 0).sum(1)
        max_l0 = max(max_l0, int(counts.max()) if len(counts) else 0)
        if max_active is not None and len(counts) and int(counts.max()) > max_active:
            cut += int((counts > max_active).sum())
            vals, idx = torch.topk(f, min(max_active, d_sae), dim=1)
            keep = vals > 0
            counts = keep.sum(1)
            idx, vals = idx[keep], vals[keep]
        else:
            rows, idx = torch.nonzero(f > 0, as_tuple=True)
            vals = f[rows, idx]
        indices.append(idx.cpu().numpy().astype(np.int32))
        values.append(vals.cpu().numpy().astype(np.float32))
        indptr.append(total + np.cumsum(counts.cpu().numpy()))
        total += int(counts.sum())
        bar.update(len(x))
    bar.close()
    X = sp.csr_matrix((np.concatenate(values), np.concatenate(indices), np.concatenate(indptr)), shape=(store.n_rows, d_sae))
    return Encoded(X, max_l0, cut)


def save_csr(root: Path, X: sp.csr_matrix) -> Path:
    """Write the CSR atomically as ``root/acts.safetensors`` (the caller writes the manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "acts.safetensors"
    with atomic_path(path) as tmp:
        save_file({"indptr": X.indptr.astype(np.int64), "indices": X.indices.astype(np.int32),
                   "values": X.data.astype(np.float32), "shape": np.asarray(X.shape, np.int64)}, str(tmp))
    return path


def load_csr(root: Path) -> sp.csr_matrix:
    """The CSR of a complete features folder (manifest and file checks first)."""
    man = Stage(root).manifest()
    for rec in man["files"]:
        verify_record(root, rec, digest=False)
    try:
        t = load_file(str(root / "acts.safetensors"))
    except Exception as exc:
        raise ArtifactError(f"torn or corrupt feature file {root / 'acts.safetensors'}: {exc}") from None
    return sp.csr_matrix((t["values"], t["indices"], t["indptr"]), shape=tuple(int(s) for s in t["shape"]))


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature sufficient statistics over N units (all arrays ``[F]``).

    count: units where the feature fires; total, total_sq: sum and sum of squares
    of its activation; max: largest activation.
    """

    n_units: int
    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, X: sp.csr_matrix) -> "FeatureStats":
        Xc = X.tocsc()
        count = np.diff(Xc.indptr)
        total = np.asarray(Xc.sum(0)).ravel().astype(np.float64)
        total_sq = np.asarray(Xc.multiply(Xc).sum(0)).ravel().astype(np.float64)
        mx = np.asarray(Xc.max(0).todense()).ravel() if Xc.nnz else np.zeros(X.shape[1])
        return cls(X.shape[0], count, total, total_sq, mx)

    @property
    def freq(self) -> np.ndarray:
        return self.count / max(self.n_units, 1)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.n_units, 1)

    @property
    def std(self) -> np.ndarray:
        var = self.total_sq / self.n_units - self.mean ** 2
        return np.sqrt(np.clip(var, 0, None))

    @property
    def dead(self) -> np.ndarray:
        """Never fires (or is constant): correlation is undefined."""
        return (self.count == 0) | (self.std <= 1e-12)


def top_units(X: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` activating units per feature: ``units [F, n]`` (-1 padded) and ``acts [F, n]``."""
    Xc = X.tocsc()
    F = X.shape[1]
    units = np.full((F, n), -1, np.int64)
    acts = np.zeros((F, n), np.float32)
    for f in range(F):
        lo, hi = Xc.indptr[f], Xc.indptr[f + 1]
        if hi == lo:
            continue
        v, r = Xc.data[lo:hi], Xc.indices[lo:hi]
        top = np.argsort(-v, kind="stable")[:n]
        units[f, : len(top)] = r[top]
        acts[f, : len(top)] = v[top]
    return units, acts
