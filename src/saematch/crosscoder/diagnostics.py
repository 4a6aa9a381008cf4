"""Per-latent diagnostics of a trained crosscoder for one model pair (A, B).

All norms and directions are in the crosscoder's scaled units (every model has
the same total variance ``D`` around its mean), so the two models are on one
footing and a latent that explains the same share of both sits at 0.5.

Columns of the latent table (one row per latent):

- ``rel_norm``: ``||d_B|| / (||d_A|| + ||d_B||)`` (Lindsey et al. 2024); ``class``
  is ``a_only`` below ``shared_low``, ``b_only`` above ``shared_high``, ``shared``
  in between, and ``dead`` where the latent never fires on the held-out units
  (the summary's fractions are over all latents, dead ones included).  ``block``:
  ``shared``, or the model a dedicated latent is confined to.
- ``cos_mapped``: cosine between ``d_A W`` and ``d_B``, where ``W`` is a ridge map
  A -> B fitted on (centred) training activations: a decoder direction maps as
  the activations do.
- Latent Scaling (Minder et al. 2025), on held-out units.  For latent j and
  model m, ``beta_m = argmin_b sum_i ||b f_ij u_m - y_im||^2`` (closed form),
  where ``u_m`` is the decoder of the *owner* model (the larger norm), mapped
  into m by the ridge map when m is not the owner.  Targets: ``beta_err_m`` uses
  ``y = x_m - x^_m + f_j d_j^m`` (what the other latents leave unexplained),
  ``beta_rec_m`` uses ``y = x^_m - b_dec_m - f_j d_j^m`` (what the other latents
  reconstruct); ``beta_m = beta_err_m + beta_rec_m`` is the fit to
  ``x_m - b_dec_m``.  Ratios ``nu = beta_other / beta_owner`` (and ``nu_err``,
  ``nu_rec`` with the other model's parts): near 0 for a truly exclusive
  latent; an exclusive-looking latent with ``nu > scaling_threshold`` is flagged
  ``suspect_exclusive`` (its direction is present in the other model, left in
  the error (Complete Shrinkage, ``nu_err``) or taken by other latents (Latent
  Decoupling, ``nu_rec``)).
- Firing across models, as USAE (Thasarathan et al. 2025) reports it.  A
  USAE encodes each model alone with TopK; a crosscoder's encoder is joint, so
  model m's *single-model code* feeds m's input and, for the other model, its
  prediction from m by the ridge map (all m can tell about it), then keeps
  each unit's top k latents.  (On planted data, dropping the other model's
  term separates shared from exclusive latents less well, and the inference
  threshold fires most latents on most units: the encoder relies on both
  terms.)  ``fires_a``/``fires_b`` count held-out
  units where the latent fires in each single-model code;
  ``firing_entropy = H(fires / sum fires) / log 2`` (1: fires equally from
  both models, 0: from one only); ``cofire`` = units where it fires in both
  single-model codes / units where it fires in either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from saematch.artifacts import atomic_path, write_json
from saematch.crosscoder.config import CrosscoderConfig
from saematch.crosscoder.data import SourceLike, aligned_take, as_sources, check_rows
from saematch.crosscoder.model import Crosscoder
from saematch.crosscoder.train import default_rows
from saematch.errors import SaematchError
from saematch.similarity.metrics.maps import RidgeMap

log = logging.getLogger(__name__)
LATENTS = "latents.parquet"
SUMMARY = "analysis.json"


@dataclass(frozen=True)
class CrosscoderAnalysis:
    """The latent table (columns in the module docstring) and its summary (written as JSON)."""

    latents: pd.DataFrame
    summary: dict
    files: tuple[Path, ...]


def _fit_maps(cc: Crosscoder, sources: Sequence, pair: tuple[int, int], train_rows: np.ndarray,
              test_rows: np.ndarray, cfg: CrosscoderConfig) -> tuple[RidgeMap, RidgeMap, float, float]:
    """Ridge maps A -> B and B -> A on scaled training units, and their R^2 on test units."""
    a, b = pair
    fit = train_rows[:cfg.map_rows]
    XA, XB = (sources[m].take(fit).double().numpy() * float(cc.scale[m]) for m in (a, b))
    ab, ba = RidgeMap(cfg.map_alpha).fit(XA, XB), RidgeMap(cfg.map_alpha).fit(XB, XA)
    held = test_rows[:cfg.map_rows]
    if len(held) < 2:
        return ab, ba, float("nan"), float("nan")
    HA, HB = (sources[m].take(held).double().numpy() * float(cc.scale[m]) for m in (a, b))
    return ab, ba, ab.score(HA, HB), ba.score(HB, HA)


def _unit(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def _cos(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(X, axis=1) * np.linalg.norm(Y, axis=1)
    return np.where(den > 0, (X * Y).sum(1) / np.where(den > 0, den, 1.0), np.nan)


class _Stream:
    """Held-out sufficient statistics for Latent Scaling, firing and FVU, accumulated batch by batch."""

    def __init__(self, cc: Crosscoder, pair: tuple[int, int], U: list[torch.Tensor], maps: list[RidgeMap]):
        self.cc, self.pair, self.U = cc, pair, U
        self.maps = [(torch.from_numpy(mp.W_).float(), torch.from_numpy(mp.b_).float()) for mp in maps]
        F = cc.d_latent
        z = lambda: torch.zeros(F, dtype=torch.float64)  # noqa: E731
        self.ff, self.count, self.both, self.any = z(), z(), z(), z()
        self.num_err, self.num_rec, self.fires = [z(), z()], [z(), z()], [z(), z()]
        self.sse, self.sum, self.sumsq, self.n, self.active = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], 0, 0

    @torch.no_grad()
    def add(self, xs_model_units: list[torch.Tensor]) -> None:
        cc = self.cc
        xs = cc.scale_in(xs_model_units)
        f = cc.jump(cc.pre_acts(xs))
        rec = cc.decode_scaled(f)
        self.ff += f.double().pow(2).sum(0)
        self.count += (f > 0).sum(0)
        self.active += int((f > 0).sum())
        single = []
        for i, m in enumerate(self.pair):
            e, h = xs[m] - rec[m], rec[m] - cc.b_dec[m]
            self.num_err[i] += (f * (e @ self.U[i].t())).double().sum(0)
            self.num_rec[i] += (f * (h @ self.U[i].t())).double().sum(0)
            other, (W, c) = self.pair[1 - i], self.maps[i]
            alone = [xs[o] if o != other else xs[m] @ W + c for o in range(cc.n_models)]
            g = cc.row_topk(cc.pre_acts(alone)) > 0  # from model m alone: the other imputed, per-unit TopK
            self.fires[i] += g.sum(0)
            single.append(g)
            self.sse[i] += float(e.double().pow(2).sum())
            self.sum[i] += xs[m].double().sum(0)
            self.sumsq[i] += float(xs[m].double().pow(2).sum())
        self.both += (single[0] & single[1]).sum(0)
        self.any += (single[0] | single[1]).sum(0)
        self.n += len(f)

    def fvu(self, i: int) -> float:
        sst = self.sumsq[i] - float((self.sum[i] ** 2).sum()) / max(self.n, 1)
        return self.sse[i] / sst if sst > 0 else float("nan")


def _betas(st: _Stream, U: list[np.ndarray], D: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Closed-form Latent Scaling per model: ``(beta_err, beta_rec)``, NaN where undefined."""
    ff = st.ff.numpy()
    err, rec = [], []
    for i in range(2):
        c = (U[i] * D[i]).sum(1)  # <u_j, d_j^m>: the latent's own contribution along u
        den = (U[i] ** 2).sum(1) * ff
        ok = den > 1e-12
        safe = np.where(ok, den, 1.0)
        err.append(np.where(ok, (st.num_err[i].numpy() + c * ff) / safe, np.nan))
        rec.append(np.where(ok, (st.num_rec[i].numpy() - c * ff) / safe, np.nan))
    return err, rec


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(den) > 1e-12, num / den, np.nan)


def analyse_crosscoder(
    cc: Crosscoder, inputs: Sequence[SourceLike], cfg: CrosscoderConfig, out: Optional[Path] = None,
    pair: tuple[int, int] = (0, 1), batch: int = 2048, train_rows: Optional[np.ndarray] = None,
    test_rows: Optional[np.ndarray] = None,
) -> CrosscoderAnalysis:
    """Latent table and summary for models ``pair`` of ``cc`` on the held-out units of ``inputs``.

    ``inputs`` are the same aligned sources (all models) the crosscoder was
    trained on; ``train_rows`` (the units it trained on: the ridge maps are fitted there) and ``test_rows``
    (every statistic is measured there, the first ``analysis_rows`` of them) default to the library's split
    (:func:`saematch.crosscoder.train.default_rows`).  With ``out``, writes
    ``latents.parquet`` and ``analysis.json`` there atomically.
    """
    sources = as_sources(inputs)
    a, b = pair
    if a == b or not (0 <= a < cc.n_models and 0 <= b < cc.n_models):
        raise SaematchError(f"analysis pair {pair} is not two distinct models of the crosscoder's {cc.n_models}")
    if [s.d_model for s in sources] != cc.d_models:
        raise SaematchError(f"inputs have d_model {[s.d_model for s in sources]}, the crosscoder reads {cc.d_models}")
    n_rows = sources[0].n_rows
    d_train, d_test = default_rows(n_rows, cfg)
    train_rows = d_train if train_rows is None else check_rows(train_rows, n_rows, "train_rows")
    test_rows = d_test if test_rows is None else check_rows(test_rows, n_rows, "test_rows")
    if np.intersect1d(train_rows, test_rows).size:
        raise SaematchError("the crosscoder's test units overlap its training units")
    test_rows = test_rows[:cfg.analysis_rows]
    if len(test_rows) < 2 or len(train_rows) < 2:
        raise SaematchError(f"{len(train_rows)} training and {len(test_rows)} held-out units; the analysis needs "
                            f"at least 2 of each")
    ab, ba, r2_ab, r2_ba = _fit_maps(cc, sources, pair, train_rows, test_rows, cfg)
    D = [cc.dec(m).detach().double().numpy() for m in pair]
    norms = np.stack([np.linalg.norm(d, axis=1) for d in D], 1)
    total = norms.sum(1)
    rel = np.where(total > 0, norms[:, 1] / np.where(total > 0, total, 1.0), 0.5)
    owner_b = rel > 0.5
    own_norm = np.where(owner_b, norms[:, 1], norms[:, 0])[:, None]
    U = [np.where(owner_b[:, None], _unit(D[1] @ ba.W_) * own_norm, D[0]),
         np.where(owner_b[:, None], D[1], _unit(D[0] @ ab.W_) * own_norm)]
    st = _Stream(cc, pair, [torch.from_numpy(u).float() for u in U], [ab, ba])
    for xs in aligned_take(sources, test_rows, batch):
        st.add(xs)
    err, rec = _betas(st, U, D)
    beta = [err[0] + rec[0], err[1] + rec[1]]
    own = np.where(owner_b, beta[1], beta[0])
    oth = [np.where(owner_b, x[0], x[1]) for x in (beta, err, rec)]
    cls = np.where(rel < cfg.shared_low, "a_only", np.where(rel > cfg.shared_high, "b_only", "shared"))
    cls = np.where(st.count.numpy() == 0, "dead", cls)
    fires = np.stack([f.numpy() for f in st.fires], 1)
    tot = fires.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = fires / tot
        ent = np.where(tot[:, 0] > 0, -np.nansum(np.where(p > 0, p * np.log(p), 0.0), 1) / np.log(2), np.nan)
    df = pd.DataFrame({
        "latent": np.arange(cc.d_latent), "class": cls, "block": cc.blocks(), "rel_norm": rel, "norm_a": norms[:, 0], "norm_b": norms[:, 1],
        "cos_mapped": _cos(D[0] @ ab.W_, D[1]), "freq": st.count.numpy() / st.n, "owner": np.where(owner_b, "b", "a"),
        "beta_a": beta[0], "beta_b": beta[1], "beta_err_a": err[0], "beta_err_b": err[1],
        "beta_rec_a": rec[0], "beta_rec_b": rec[1],
        "nu": _ratio(oth[0], own), "nu_err": _ratio(oth[1], own), "nu_rec": _ratio(oth[2], own),
        "fires_a": fires[:, 0].astype(np.int64), "fires_b": fires[:, 1].astype(np.int64),
        "firing_entropy": ent, "cofire": _ratio(st.both.numpy(), st.any.numpy()),
    })
    df["suspect_exclusive"] = df["class"].isin(["a_only", "b_only"]) & (df["nu"] > cfg.scaling_threshold)
    summary = _summary(df, cc, pair, st, r2_ab, r2_ba)
    files: tuple[Path, ...] = ()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / LATENTS) as tmp:
            df.to_parquet(tmp, index=False)
        write_json(out / SUMMARY, summary)
        files = (out / LATENTS, out / SUMMARY)
    return CrosscoderAnalysis(df, summary, files)


CLASSES = ("shared", "a_only", "b_only", "dead")


def _summary(df: pd.DataFrame, cc: Crosscoder, pair: tuple[int, int], st: _Stream, r2_ab: float, r2_ba: float) -> dict:
    """Counts and fractions of every class over *all* latents (dead ones are a class of their own, so the four
    fractions sum to 1 and a dictionary with many dead latents cannot look more exclusive by a smaller
    denominator), held-out FVU and L0, and per-class medians."""
    med = lambda s: float(s.median()) if len(s.dropna()) else float("nan")  # noqa: E731
    n = len(df)
    out = {"model_a": cc.names[pair[0]], "model_b": cc.names[pair[1]], "n_latents": n,
           "n_live": int((df["class"] != "dead").sum()), "n_heldout_units": st.n, "map_r2_ab": r2_ab,
           "map_r2_ba": r2_ba, "fvu_a": st.fvu(0), "fvu_b": st.fvu(1), "l0": st.active / max(st.n, 1),
           "suspect_exclusive": int(df["suspect_exclusive"].sum()), "n_dedicated": int((df["block"] != "shared").sum())}
    for c in CLASSES:
        sel = df[df["class"] == c]
        out[f"n_{c}"] = len(sel)
        out[f"{c}_fraction"] = len(sel) / n if n else float("nan")
        if c == "dead":
            continue
        out[f"median_nu_{c}"] = med(sel["nu"])
        out[f"median_firing_entropy_{c}"] = med(sel["firing_entropy"])
        out[f"median_cofire_{c}"] = med(sel["cofire"])
        out[f"median_cos_mapped_{c}"] = med(sel["cos_mapped"])
    return out
