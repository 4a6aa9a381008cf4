"""Spreads over seeds: every class fraction, dead count and FVU of a node's crosscoders, per variant.

A node trains ``crosscoder.seeds`` crosscoders per variant (``plain``, ``dedicated``, and on the floor
``plain-whitened``); one record per crosscoder (its analysis summary, Latent Scaling summary and agreement
summary) goes into the manifest, and :func:`aggregate` gives mean, sd (over seeds, ddof 1; None for one
seed), min and max of each readout.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np

FRACTIONS = ("shared_fraction", "a_only_fraction", "b_only_fraction", "dead_fraction")
COUNTS = ("n_shared", "n_a_only", "n_b_only", "n_dead", "n_live", "suspect_exclusive")
QUALITY = ("fvu_a", "fvu_b", "l0", "map_r2_ab")
AGREEMENT = ("hungarian_pair_fraction", "median_corr_ab")


def spread(values: Iterable[Optional[float]]) -> dict[str, Any]:
    """mean, sd (ddof 1, None below two values), min, max and n of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], float)
    if not len(v):
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def readouts(rec: dict) -> dict[str, Optional[float]]:
    """The readouts of one crosscoder record that get a spread."""
    s = rec["summary"]
    out = {k: s.get(k) for k in FRACTIONS + COUNTS + QUALITY}
    out["n_suspect"] = rec["latent_scaling"]["n_suspect"]
    agr = rec.get("agreement") or {}
    out.update({k: agr.get(k) for k in AGREEMENT})
    return out


def aggregate(records: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{variant: {readout: spread}}`` over the seeds of each variant."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in records):
        recs = [readouts(r) for r in records if r["variant"] == variant]
        out[variant] = {k: spread(r[k] for r in recs) for k in recs[0]}
        out[variant]["seeds"] = {"n": len(recs), "values": [r["seed"] for r in records if r["variant"] == variant]}
    return out


def fmt(s: Optional[dict], pct: bool = True, digits: int = 3) -> str:
    """'mean ± sd [min, max]' (percent for fractions); '–' when there is nothing."""
    if not s or s.get("mean") is None:
        return "–"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")  # noqa: E731
    if s["n"] == 1:
        return f(s["mean"])
    return f"{f(s['mean'])} ± {f(s['sd'])} [{f(s['min'])}, {f(s['max'])}]"
