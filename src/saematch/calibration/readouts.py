"""Every readout of one layer pair beside its floors and (for SAE readouts) its ceiling, on test documents.

Floors (each a matching or an activation set measured in the same run):

- ``random``: either model's architecture with random weights (``A@random`` against B, A against
  ``B@random``); the higher of the two is the random floor;
- ``token``: either model's input embeddings (``A@embed`` against B's layer, A's layer against
  ``B@embed``): token identity and nothing else; the higher of the two is the token floor.

The **strongest floor** is the higher of all; ``calibrated`` is measured against it, ``calibrated_random``
and ``calibrated_token`` against each group ("beyond random weights", "beyond token identity").  A readout
with no measured floor is not calibrated (``missing_control: floor``).

Readouts, what they are measured on, and what their interval resamples (``resamples``, ``ci_method``):

- ``matched-corr``: mean held-out correlation of the Hungarian pairs (paired on train documents); ceiling:
  both models' seed twins, pooled.  Test documents, bootstrap (BCa), every floor, the ceiling and the ratios
  from the same replicates, from per-document sums.
- ``mknn``, ``cka-linear``: raw activations of test units.  No ceiling: the same model against itself is 1
  by construction, so they are reported *floor-adjusted*, (s − f)/(1 − f), labelled so, never beside the SAE
  readouts' calibrated scores, with Gröger et al.'s permutation-calibrated score and p-value beside them
  (``perm_*``: K row permutations, threshold at level α).  Test documents, half-samples (a duplicated unit is
  its own neighbour).
- ``svcca``, ``rsa``: decoder rows of the matched pairs (the seed paper's).  No document enters a decoder, so
  the interval resamples matched pairs, conditional on the pairing made on train documents.
- ``svcca-subspace``: SVCCA between the subspaces spanned by the matched features' activations on test units.
  CCA is invariant to permuting columns, so it measures whether the two *sets* of matched features span
  related subspaces, not whether each pair is right.  Test documents, half-samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from saematch.calibration.calibrate import Resampled, metric_readout
from saematch.calibration.config import CalibrationConfig
from saematch.calibration.permcal import permutation_calibrate
from saematch.calibration.resample import Interval, doc_bootstrap, half_sample, half_sample_items, ratio
from saematch.calibration.svcca_units import svcca_units_readout
from saematch.matching.docstats import PairDocStats

RAW_READOUTS = ("mknn", "cka-linear")
DECODER_READOUTS = ("svcca", "rsa")
FLOOR_GROUPS = {"random": ("random_a", "random_b"), "token": ("embed_a", "embed_b")}


@dataclass(frozen=True)
class Matching:
    """One matching seen from the test documents: its pairs, per-document sums of every pair over the test
    documents, the decoders ``[F, d]`` of both sides, and the matched features' activations on the sampled
    test units (for the subspace readout)."""

    pairs: pd.DataFrame
    stats: PairDocStats
    dec_a: np.ndarray
    dec_b: np.ndarray
    acts_a: Any = None
    acts_b: Any = None


@dataclass(frozen=True)
class LayerPairInputs:
    """What the readouts of one layer pair read.

    main, floors (by name: random_a, random_b, embed_a, embed_b), twins (A's and B's seed twin at these layers);
    raw: activations on the sampled test units by name ('A', 'B', and the floors' names); raw_train: 'A', 'B' on
    sampled train units (for choosing layers); unit_group: dense test-document index of each sampled test unit.
    """

    main: Matching
    floors: dict[str, Matching]
    twins: tuple[Optional[Matching], Optional[Matching]]
    raw: dict[str, np.ndarray]
    raw_train: dict[str, np.ndarray]
    unit_group: np.ndarray
    labels: dict[str, Any] = field(default_factory=dict)


NAMES = ["score", "floor_random", "floor_token", "floor", "ceiling", "calibrated", "span", "calibrated_random",
         "calibrated_token"]


def _combine(keys: list[str], raw: bool = False) -> Any:
    """``values -> [len(NAMES), ...]``: ``values`` are the score, the floors named in ``keys[1:]``, then the two
    twins (if any); each a scalar or an array of replicates.  Floors combine by group maximum, the strongest floor
    is the maximum of all, the ceiling is the twins' mean.  ``raw``: no ceiling; calibrated against 1 (floor-adjusted)
    and the ceiling column left NaN."""
    def f(values: list) -> np.ndarray:
        v = [np.asarray(x, np.float64) for x in values]
        vals, twins = dict(zip(keys, v[:len(keys)])), v[len(keys):]
        s = vals["score"]
        nan = np.full_like(s, np.nan)
        groups = {g: [vals[n] for n in names if n in vals] for g, names in FLOOR_GROUPS.items()}
        fg = {g: np.maximum.reduce(x) if x else nan for g, x in groups.items()}
        have = [x for x in groups.values() if x]
        floor = np.maximum.reduce([fg[g] for g in groups if groups[g]]) if have else nan
        c = np.ones_like(s) if raw else (0.5 * (twins[0] + twins[1]) if len(twins) == 2 else nan)
        return np.stack([s, fg["random"], fg["token"], floor, nan if raw else c, ratio(s, floor, c), c - floor,
                         ratio(s, fg["random"], c), ratio(s, fg["token"], c)])

    return f


def _strongest(values: dict[str, float]) -> str:
    known = {k: v for k, v in values.items() if np.isfinite(v)}
    return max(known, key=known.get) if known else "none"


def _emit(labels: dict, readout: str, space: str, resamples: str, ivs: list[Interval], kind: str, strongest: str,
          cal: CalibrationConfig, **extra: Any) -> dict:
    row: dict[str, Any] = {**labels, "readout": readout, "space": space, "resamples": resamples,
                           "ci_method": ivs[0].method, "n_boot": ivs[0].n_boot, "calibrated_kind": kind,
                           "floor_kind": strongest, **extra}
    for n, iv in zip(NAMES, ivs):
        row.update(iv.fields(n))
    missing = "floor" if not np.isfinite(row["floor"]) else (
        "ceiling" if kind == "ceiling" and not np.isfinite(row["ceiling"]) else "")
    span, se = row["span"], row["span_se"]
    row["separation"] = float(span / se) if np.isfinite(span) and se and np.isfinite(se) else (
        float("inf") if np.isfinite(span) and span > 0 else float("nan"))
    row["missing_control"] = missing
    row["uninformative"] = bool(missing or not (span > 0 and row["separation"] > cal.uninformative_se))
    if missing:
        for n in ("calibrated", "calibrated_random", "calibrated_token"):
            row[n] = row[f"{n}_ci_low"] = row[f"{n}_ci_high"] = np.nan
    return row


def _floor_names(inp: LayerPairInputs, pool: dict) -> list[str]:
    return [n for n in ("random_a", "random_b", "embed_a", "embed_b") if n in pool]


def matched_corr_row(inp: LayerPairInputs, cal: CalibrationConfig) -> dict:
    """Matched correlation with both floor groups, the strongest floor, the twin ceiling and the calibrated scores,
    every value from the same document replicates."""
    fl = _floor_names(inp, inp.floors)
    sides = [inp.main, *(inp.floors[n] for n in fl), *(t for t in inp.twins if t is not None)]
    comb = _combine(["score", *fl])
    ivs = doc_bootstrap(lambda w: comb([m.stats.mean_corr(w) for m in sides]), inp.main.stats.n_docs,
                        cal.n_bootstrap, cal.seed, cal.ci_level)
    ones = np.ones((1, inp.main.stats.n_docs))
    full = {n: float(inp.floors[n].stats.mean_corr(ones)[0]) for n in fl}
    return _emit(inp.labels, "matched-corr", "pairs (held-out)", "test documents (bootstrap)", ivs, "ceiling",
                 _strongest(full), cal, score_train=float(np.nanmean(inp.main.pairs["corr_train"])),
                 n_items=int(inp.main.stats.n_pairs), n_docs=int(inp.main.stats.n_docs))


def _unit_stat(readouts: list[Resampled], groups: np.ndarray, combine: Any) -> Any:
    def stat(keep: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(keep[groups])
        return combine([float(r.fn(idx)) for r in readouts])

    return stat


def raw_rows(inp: LayerPairInputs, cal: CalibrationConfig) -> list[dict]:
    """mknn and linear CKA on test units, floor-adjusted (no ceiling), intervals from document half-samples."""
    from saematch.similarity.base import get_metric

    rows = []
    A, B = inp.raw["A"], inp.raw["B"]
    n_docs = int(inp.unit_group.max()) + 1
    fl = _floor_names(inp, inp.raw)
    for name in RAW_READOUTS:
        m = get_metric(name)
        parts = [metric_readout(m, A, B)] + [metric_readout(m, inp.raw[n], B) if n.endswith("_a") else
                                             metric_readout(m, A, inp.raw[n]) for n in fl]
        ivs = half_sample(_unit_stat(parts, inp.unit_group, _combine(["score", *fl], raw=True)), n_docs,
                          cal.n_halfsamples, cal.seed, cal.ci_level)
        full = {n: float(p.value()) for n, p in zip(fl, parts[1:])}
        train = float(m(inp.raw_train["A"], inp.raw_train["B"]).score)
        perm = permutation_calibrate(m, A, B, cal.n_permutations, cal.perm_alpha, seed=cal.seed).fields()
        rows.append(_emit(inp.labels, name, "activations (test units)", "test documents (half-samples)", ivs,
                          "floor-adjusted (s - f) / (1 - f)", _strongest(full), cal, score_train=train,
                          n_items=int(len(A)), n_docs=n_docs, **perm))
    return rows


def _sub(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    ok = pairs[np.isfinite(pairs["correlation"])]
    return ok.sample(n, random_state=seed) if len(ok) > n else ok


def _decoder(metric: Any, side: Matching, n: int, seed: int) -> tuple[Resampled, dict]:
    p = _sub(side.pairs, n, seed)
    X, Y = side.dec_a[p["feature_a"].to_numpy()], side.dec_b[p["feature_b"].to_numpy()]
    return metric_readout(metric, X, Y), dict(metric(X, Y).diagnostics)


def decoder_rows(inp: LayerPairInputs, cal: CalibrationConfig) -> list[dict]:
    """SVCCA and RSA on matched decoder rows against the strongest floor and the pooled twin ceiling; intervals
    from half-samples of each matching's pairs (given the pairing, which was made on train documents)."""
    from saematch.similarity.base import get_metric

    rows = []
    fl = _floor_names(inp, inp.floors)
    twins = [t for t in inp.twins if t is not None]
    for name in DECODER_READOUTS:
        m = get_metric(name)
        s, diag = _decoder(m, inp.main, cal.max_pairs, cal.seed)
        parts = [s] + [_decoder(m, inp.floors[n], cal.max_pairs, cal.seed)[0] for n in fl]
        parts += [_decoder(m, t, cal.max_pairs, cal.seed)[0] for t in twins]
        ivs = half_sample_items(parts, _combine(["score", *fl]), cal.n_halfsamples, cal.seed, cal.ci_level)
        full = {n: float(p.value()) for n, p in zip(fl, parts[1:])}
        rows.append(_emit(inp.labels, name, "decoder rows", "matched pairs (half-samples, given the pairing)", ivs,
                          "ceiling", _strongest(full), cal, score_train=np.nan, n_items=int(s.n_items),
                          degenerate=bool(diag.get("degenerate", False)), k_x=diag.get("k_x"), k_y=diag.get("k_y")))
    return rows


def subspace_row(inp: LayerPairInputs, cal: CalibrationConfig, dims: int) -> Optional[dict]:
    """SVCCA between the matched features' activation subspaces on test units, half-sampled by document."""
    def readout(side: Matching) -> Resampled:
        p = _sub(side.pairs, dims, cal.seed)
        A = side.acts_a[:, p["feature_a"].to_numpy()].toarray().astype(np.float64)
        B = side.acts_b[:, p["feature_b"].to_numpy()].toarray().astype(np.float64)
        return svcca_units_readout(A, B, cal.svcca_var, None, cal.min_items_per_dim)

    if inp.main.acts_a is None:
        return None
    fl = _floor_names(inp, inp.floors)
    parts = [readout(inp.main)] + [readout(inp.floors[n]) for n in fl] + [readout(t) for t in inp.twins if t is not None]
    n_docs = int(inp.unit_group.max()) + 1
    ivs = half_sample(_unit_stat(parts, inp.unit_group, _combine(["score", *fl])), n_docs, cal.n_halfsamples,
                      cal.seed, cal.ci_level)
    full = {n: float(p.value()) for n, p in zip(fl, parts[1:])}
    return _emit(inp.labels, "svcca-subspace", "matched features' activation subspaces (test units)",
                 "test documents (half-samples)", ivs, "ceiling", _strongest(full), cal, score_train=np.nan,
                 n_items=int(len(inp.unit_group)), n_docs=n_docs)


def layer_pair_readouts(inp: LayerPairInputs, cal: CalibrationConfig, unit_dims: int) -> list[dict]:
    rows = [matched_corr_row(inp, cal), *raw_rows(inp, cal), *decoder_rows(inp, cal)]
    sub = subspace_row(inp, cal, unit_dims)
    return rows + ([sub] if sub is not None else [])
