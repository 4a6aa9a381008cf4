"""Per-feature universality: is a matched pair as similar as two seeds of one SAE, and beyond chance?

For each matched pair (feature a of model A, feature b of model B):

- ``corr_test``: its held-out correlation (paired on train units, scored on test units);
- ``twin_a`` / ``twin_b``: each feature's seed-twin correlation, the held-out correlation
  of that feature with its Hungarian partner in a second SAE of the same model and layer
  trained with another seed (how well the feature reproduces at all);
- ``floor_percentile``: where corr_test falls (0..100) in the floor distribution, the
  held-out matched correlations of a control (a random-init model, or shuffled units).

A pair is *universal* when ``corr_test > percentile(floor, floor_pct)`` and
``corr_test >= twin_frac * twin_ref``.  ``twin_ref`` is ``min(twin_a, twin_b)`` by
default: if a feature is a noisy copy of a latent with reliability r (its twin
correlation), two models sharing the latent correlate at about
sqrt(r_a * r_b) (Spearman's attenuation bound), which lies between the min and the
mean; the min is the lenient reference (a pair is held to its less reproducible
feature), 'geomean' is the attenuation bound itself, 'mean' the strict one.  A pair
with a feature that found no twin partner (NaN twin) has no ceiling and is not
universal; a NaN corr_test (constant on the test units) is not universal either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from saematch.artifacts import atomic_path, write_json
from saematch.calibration.calibrate import CalibratedReadout, calibrate_readout, item_mean
from saematch.calibration.config import CalibrationConfig
from saematch.calibration.heldout import HeldOut
from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def floor_percentile(values_P: np.ndarray, floor_M: np.ndarray) -> np.ndarray:
    """``[P]`` percent of the floor below each value (ties count half, as ``percentileofscore(kind='mean')``)."""
    floor = np.sort(_finite_floor(floor_M))
    v = np.asarray(values_P, np.float64)
    below = np.searchsorted(floor, v, side="left")
    upto = np.searchsorted(floor, v, side="right")
    pct = 100.0 * (below + upto) / (2 * len(floor))
    return np.where(np.isfinite(v), pct, np.nan)


def _finite_floor(floor_M: np.ndarray) -> np.ndarray:
    floor = np.asarray(floor_M, np.float64).ravel()
    floor = floor[np.isfinite(floor)]
    if len(floor) == 0:
        raise SaematchError("the floor distribution is empty (no finite held-out correlations in the control)")
    return floor


def twin_reference(twin_a: np.ndarray, twin_b: np.ndarray, how: str = "min") -> np.ndarray:
    """Combine the two features' twin correlations: 'min', 'geomean' (of the positive parts) or 'mean'."""
    a, b = np.asarray(twin_a, np.float64), np.asarray(twin_b, np.float64)
    if how == "min":
        return np.minimum(a, b)
    if how == "mean":
        return (a + b) / 2
    if how == "geomean":
        return np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None))
    raise SaematchError(f"unknown twin reference {how!r} (known: min, geomean, mean)")


@dataclass(frozen=True)
class PairUniversality:
    """Universality of matched pairs (arrays ``[P]``, in the order given).

    corr_test, twin_a, twin_b: as in the module docstring; twin_ref: their combination.
    floor_percentile: 0..100 position of corr_test in the floor distribution.
    universal: corr_test > floor_threshold and corr_test >= twin_frac * twin_ref (False on NaN).
    floor_threshold: the floor's ``floor_pct`` percentile; n_floor: finite floor values used.
    """

    corr_test: np.ndarray
    twin_a: np.ndarray
    twin_b: np.ndarray
    twin_ref: np.ndarray
    floor_percentile: np.ndarray
    universal: np.ndarray
    floor_threshold: float
    n_floor: int
    floor_pct: float
    twin_frac: float

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"corr_heldout": self.corr_test, "twin_a": self.twin_a, "twin_b": self.twin_b,
                             "twin_ref": self.twin_ref, "floor_percentile": self.floor_percentile,
                             "universal": self.universal})


def pair_universality(corr_test_P: np.ndarray, twin_a_P: np.ndarray, twin_b_P: np.ndarray, floor_M: np.ndarray,
                      floor_pct: float = 99.0, twin_frac: float = 0.5, how: str = "min") -> PairUniversality:
    """Universality flags of P matched pairs against a floor distribution of M control correlations."""
    corr = np.asarray(corr_test_P, np.float64).ravel()
    ta, tb = np.asarray(twin_a_P, np.float64).ravel(), np.asarray(twin_b_P, np.float64).ravel()
    if not len(corr) == len(ta) == len(tb):
        raise SaematchError(f"universality needs one twin correlation per pair and side, got {len(corr)} pairs, "
                            f"{len(ta)} and {len(tb)} twin values")
    floor = _finite_floor(floor_M)
    if len(floor) < 100 / (100 - floor_pct):
        log.warning("floor has %d values: its %.1fth percentile is just its maximum", len(floor), floor_pct)
    thr = float(np.percentile(floor, floor_pct))
    ref = twin_reference(ta, tb, how)
    with np.errstate(invalid="ignore"):
        universal = np.isfinite(corr) & np.isfinite(ref) & (corr > thr) & (corr >= twin_frac * ref)
    return PairUniversality(corr, ta, tb, ref, floor_percentile(corr, floor), universal, thr, len(floor),
                            float(floor_pct), float(twin_frac))


class Fraction(NamedTuple):
    """A universal fraction with its percentile bootstrap CI and SE (bootstrap over items).

    n_universal of n_items; items are the matched pairs, or all features when a total is given
    (unpaired features then count as not universal).
    """

    fraction: float
    ci_low: float
    ci_high: float
    se: float
    n_universal: int
    n_items: int


def universal_fraction(universal_P: np.ndarray, n_total: int | None = None, n_boot: int = 100, seed: int = 0,
                       level: float = 0.95) -> Fraction:
    """Share of universal items; ``n_total`` > P pads with non-universal items (e.g. unpaired features)."""
    u = np.asarray(universal_P, bool).ravel()
    n = len(u) if n_total is None else int(n_total)
    if n < len(u):
        raise SaematchError(f"n_total ({n}) is smaller than the number of pairs ({len(u)})")
    if n == 0:
        return Fraction(float("nan"), float("nan"), float("nan"), float("nan"), 0, 0)
    k = int(u.sum())
    padded = np.zeros(n, bool)
    padded[: len(u)] = u
    rng = np.random.default_rng([seed, 5])
    reps = np.array([padded[rng.integers(0, n, n)].mean() for _ in range(max(n_boot, 0))])
    if len(reps) < 2:
        return Fraction(k / n, float("nan"), float("nan"), float("nan"), k, n)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Fraction(k / n, float(lo), float(hi), float(reps.std(ddof=1)), k, n)


def universal_fractions(frame: pd.DataFrame, by: Sequence[str], n_boot: int = 100, seed: int = 0,
                        level: float = 0.95) -> pd.DataFrame:
    """Universal fraction per group of a pair table with a ``universal`` column (e.g. by layer or layer pair)."""
    if "universal" not in frame.columns:
        raise SaematchError("the pair table has no 'universal' column")
    rows = []
    for key, grp in frame.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **universal_fraction(grp["universal"].to_numpy(), None, n_boot, seed,
                                                                level)._asdict()})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class UniversalityResult:
    """What :func:`run_universality` computed for one layer pair.

    pairs: one row per matched pair (features, corr_train, corr_heldout, twins, floor percentile, universal).
    fraction: universal fraction over the matched pairs.  matched_corr: the held-out mean matched
    correlation with its floor (the control's pairs) and its ceiling (both seed twins' pairs, pooled).
    """

    pairs: pd.DataFrame
    fraction: Fraction
    matched_corr: CalibratedReadout


def run_universality(pair: HeldOut, twin_a: HeldOut, twin_b: HeldOut, floor: HeldOut, n_features_a: int,
                     n_features_b: int, cfg: CalibrationConfig, out: Path | None = None,
                     labels: dict[str, Any] | None = None) -> UniversalityResult:
    """One layer-pair node: universality of every matched pair and the calibrated matched correlation.

    pair: A vs B held-out pairs.  twin_a / twin_b: each model's SAE (side 'a') against its seed
    twin (side 'b') at the same layer.  floor: the control's held-out pairs at this layer pair.
    Writes ``universality.parquet`` and ``calibration.json`` under ``out`` when given; ``labels``
    (model and layer names) are added as columns and JSON fields.
    """
    ta = twin_a.per_feature("a", n_features_a)[pair.feature_a]
    tb = twin_b.per_feature("a", n_features_b)[pair.feature_b]
    pu = pair_universality(pair.corr_test, ta, tb, floor.corr_test, cfg.universal_floor_pct,
                           cfg.universal_twin_frac, cfg.twin_reference)
    df = pd.concat([pair.frame()[["feature_a", "feature_b", "corr_train"]], pu.frame()], axis=1)
    for k, v in (labels or {}).items():
        df.insert(0, k, v)
    frac = universal_fraction(pu.universal, None, cfg.n_bootstrap, cfg.seed, cfg.ci_level)
    ceiling = item_mean(np.concatenate([twin_a.corr_test, twin_b.corr_test]))
    readout = calibrate_readout(item_mean(pair.corr_test), item_mean(floor.corr_test), ceiling, cfg.n_bootstrap,
                                cfg.seed, cfg.ci_level, cfg.uninformative_se)
    res = UniversalityResult(df, frac, readout)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "universality.parquet") as tmp:
            df.to_parquet(tmp, index=False)
        write_json(out / "calibration.json", {
            **(labels or {}), "universal_fraction": frac._asdict(), "floor_threshold": pu.floor_threshold,
            "n_floor": pu.n_floor, "floor_pct": pu.floor_pct, "twin_frac": pu.twin_frac,
            "twin_reference": cfg.twin_reference, "matched_corr_heldout": readout.row()})
    log.info("universal fraction %.3f [%.3f, %.3f]; held-out matched corr %.3f, floor %.3f, ceiling %.3f",
             frac.fraction, frac.ci_low, frac.ci_high, readout.score.value, readout.floor.value,
             readout.ceiling.value)
    return res


def _twin_of(twin: Any, features: np.ndarray, corr_BP: np.ndarray) -> np.ndarray:
    """``[B, len(features)]``: each feature's seed-twin correlation in every replicate (NaN: no twin partner)."""
    pos = np.full(int(max(features.max(initial=0), twin.pairs["feature_a"].max()) + 1), -1, np.int64)
    pos[twin.pairs["feature_a"].to_numpy()] = np.arange(len(twin.pairs))
    idx = pos[features]
    out = np.where(idx[None, :] >= 0, corr_BP[:, np.maximum(idx, 0)], np.nan)
    return out


def universality_of(inp: Any, cfg: CalibrationConfig, n_live_a: int) -> tuple[pd.DataFrame | None, dict]:
    """Universality of every matched pair of one layer pair, and the share of A's ``n_live_a`` live features that
    have a universal partner, with a document-bootstrap interval.

    The floor distribution is the strongest floor's: of the floors' held-out matched correlations, the one whose
    ``universal_floor_pct`` percentile is highest.  Without twins or floors there is no universality (None).
    """
    from saematch.calibration.resample import doc_bootstrap

    if not inp.floors or any(t is None for t in inp.twins) or n_live_a < 1:
        return None, {}
    pairs = inp.main.pairs
    fa, fb = pairs["feature_a"].to_numpy(np.int64), pairs["feature_b"].to_numpy(np.int64)

    def parts(w: np.ndarray) -> tuple:
        corr = inp.main.stats.corr(w)
        floors = [f.stats.corr(w) for f in inp.floors.values()]
        with np.errstate(invalid="ignore"):
            pct = [np.nanpercentile(f, cfg.universal_floor_pct, axis=1) for f in floors]
        strongest = int(np.argmax([np.nanmean(p) for p in pct]))
        ta = _twin_of(inp.twins[0], fa, inp.twins[0].stats.corr(w))
        tb = _twin_of(inp.twins[1], fb, inp.twins[1].stats.corr(w))
        return corr, pct[strongest], floors[strongest], ta, tb

    def flags(w: np.ndarray) -> np.ndarray:
        corr, thr, _, ta, tb = parts(w)
        ref = twin_reference(ta, tb, cfg.twin_reference)
        with np.errstate(invalid="ignore"):
            return np.isfinite(corr) & np.isfinite(ref) & (corr > thr[:, None]) & (corr >= cfg.universal_twin_frac * ref)

    ones = np.ones((1, inp.main.stats.n_docs))
    uni = flags(ones)[0]
    corr, _, floor, ta, tb = parts(ones)
    df = pd.DataFrame({**inp.labels, "feature_a": fa, "feature_b": fb, "corr_train": pairs["corr_train"].to_numpy(),
                       "corr_heldout": corr[0], "twin_a": ta[0], "twin_b": tb[0],
                       "twin_ref": twin_reference(ta[0], tb[0], cfg.twin_reference),
                       "floor_percentile": floor_percentile(corr[0], floor[0]), "universal": uni})
    iv = doc_bootstrap(lambda w: flags(w).sum(1)[None, :] / n_live_a, inp.main.stats.n_docs, cfg.n_bootstrap, cfg.seed,
                       cfg.ci_level)[0]
    frac = {**inp.labels, "fraction": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "se": iv.se, "bias": iv.bias,
            "n_universal": int(uni.sum()), "n_live_a": int(n_live_a), "denominator": "live features of A",
            "resamples": "test documents (bootstrap)", "ci_method": iv.method}
    return df, frac
