"""SAE transfer: B's SAE read on A's activations mapped into B's space.

FVU is ``sum ||x_B - dec(enc(input))||^2 / sum ||x_B - mean(x_B)||^2`` over the
held-out units, always against B's *true* activations; the input is either B's
own activations (native) or A's mapped into B (mapped).  ``fvu_map`` is the map
alone (``1 - R^2``), so ``fvu_mapped - fvu_map`` shows what the SAE adds.

Per feature of B: the Pearson correlation, over held-out units, between its
activation on mapped A and on B itself.  ``frac_above_floor`` counts features
that fire on B's own units and whose correlation exceeds ``floor`` (e.g. the
same statistic with a random-init model, from the calibration controls).  When
no floor is given it is recorded as absent (None) and no fraction is claimed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from saematch.errors import SaematchError


@dataclass(frozen=True)
class SAETransferResult:
    """B's SAE on mapped A versus on B itself, over the same held-out units."""

    fvu_native: float  # B's SAE on B's activations
    fvu_mapped: float  # B's SAE on A mapped into B, against B's activations
    fvu_map: float  # the map alone (1 - variance-weighted R^2)
    l0_native: float  # mean active latents per unit on B's activations
    l0_mapped: float  # the same on mapped A
    n_features: int  # B's SAE width
    n_alive: int  # features that fire on B's held-out units (those with a defined correlation)
    median_corr: float  # median per-feature correlation over alive features (NaN if none)
    floor: Optional[float]  # correlation floor passed in; None when absent
    frac_above_floor: Optional[float]  # alive features above the floor; None when no floor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def _encode_decode(sae: Any, X: np.ndarray, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = getattr(sae, "dtype", torch.float32)
    device = getattr(sae, "device", "cpu")
    feats, recon = [], []
    for s in range(0, X.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(X[s:s + batch])).to(device=device, dtype=dtype)
        f = sae.encode(x)
        recon.append(sae.decode(f).float().cpu())
        feats.append(f.float().cpu())
    return torch.cat(feats), torch.cat(recon)


def feature_correlations(F_true_NF: torch.Tensor, F_pred_NF: torch.Tensor) -> np.ndarray:
    """Per-column Pearson correlation; NaN where the true column is constant, 0 where only pred is."""
    a = F_true_NF.double() - F_true_NF.double().mean(0)
    b = F_pred_NF.double() - F_pred_NF.double().mean(0)
    sa, sb = (a * a).sum(0).sqrt(), (b * b).sum(0).sqrt()
    r = (a * b).sum(0) / (sa * sb).clamp_min(1e-30)
    r = torch.where(sb > 0, r, torch.zeros_like(r))
    return torch.where(sa > 0, r, torch.full_like(r, float("nan"))).numpy()


def sae_transfer(
    sae_b: Any, XA_in_B: np.ndarray, XB: np.ndarray, floor: Optional[float] = None, batch: int = 2048,
) -> tuple[SAETransferResult, pd.DataFrame]:
    """Score B's SAE on mapped A against B; return the summary and a per-feature table."""
    XA_in_B, XB = np.asarray(XA_in_B, np.float32), np.asarray(XB, np.float32)
    if XA_in_B.shape != XB.shape:
        raise SaematchError(f"mapped A has shape {XA_in_B.shape} but B's activations have {XB.shape}")
    d_in = int(getattr(getattr(sae_b, "cfg", None), "d_in", XB.shape[1]))
    if d_in != XB.shape[1]:
        raise SaematchError(f"B's SAE reads d_in={d_in}, but B's activations have {XB.shape[1]} dims")
    F_b, R_b = _encode_decode(sae_b, XB, batch)
    F_m, R_m = _encode_decode(sae_b, XA_in_B, batch)
    xb = torch.from_numpy(XB).double()
    sst = float(((xb - xb.mean(0)) ** 2).sum())
    if sst <= 0:
        raise SaematchError("B's held-out activations are constant; FVU is undefined")
    fvu = lambda R: float(((xb - R.double()) ** 2).sum()) / sst  # noqa: E731
    fvu_map = float(((xb - torch.from_numpy(XA_in_B).double()) ** 2).sum()) / sst
    corr = feature_correlations(F_b, F_m)
    alive = ~np.isnan(corr)
    frac = float(np.mean(corr[alive] > floor)) if floor is not None and alive.any() else None
    res = SAETransferResult(
        fvu_native=fvu(R_b), fvu_mapped=fvu(R_m), fvu_map=fvu_map,
        l0_native=float((F_b != 0).sum(1).float().mean()), l0_mapped=float((F_m != 0).sum(1).float().mean()),
        n_features=int(F_b.shape[1]), n_alive=int(alive.sum()),
        median_corr=float(np.median(corr[alive])) if alive.any() else float("nan"),
        floor=None if floor is None else float(floor), frac_above_floor=frac,
    )
    table = pd.DataFrame({
        "feature": np.arange(F_b.shape[1]), "corr": corr,
        "freq_native": (F_b != 0).float().mean(0).numpy(), "freq_mapped": (F_m != 0).float().mean(0).numpy(),
    })
    return res, table
