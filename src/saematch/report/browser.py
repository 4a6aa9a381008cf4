"""The feature-pair browser: one self-contained ``RUN/report/browser.html``.

:func:`browser_data` reads the run directory (pair tables, feature cards, sparse
feature activations, similarity scores) into a compact, capped dict;
:func:`render_browser` inlines it with the JS and CSS of ``assets/`` into one
HTML file with no network access; :func:`build_browser` writes it atomically.

What is embedded is capped (:class:`BrowserConfig`): the best ``max_pairs``
pairs of every layer pair (by held-out correlation when the pair tables have
``corr_test``, else by correlation), and cards only for the features of those
pairs.  The cap and what it left out are stated on the page and logged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from saematch.artifacts import RunLayout, atomic_path
from saematch.errors import ArtifactError, ConfigError, SaematchError

log = logging.getLogger(__name__)

#: Bits of the per-pair ``flags`` integer in the embedded data.
FLAGS = {"dense_a": 1, "dense_b": 2, "punctuation": 4, "below_min_corr": 8, "keep": 16, "universal": 32}
#: Optional numeric pair columns, embedded when a run's pair tables have them.
OPTIONAL_COLS = ("corr_test", "corr_train", "twin_corr_a", "twin_corr_b")
#: Optional score columns (calibration against floor and ceiling controls).
OPTIONAL_SCORE_COLS = ("calibrated", "floor", "ceiling")


@dataclass(frozen=True)
class BrowserConfig:
    """What ``browser.html`` embeds (its size grows with all four)."""

    max_pairs: int = 150  # pairs embedded per layer pair, best first (held-out corr when present)
    n_contexts: int = 4  # top contexts embedded per feature
    context_chars: int = 60  # characters kept either side of the «unit» in a context
    hist_bins: int = 16  # bins of each feature's activation histogram (0 .. max activation)
    page_size: int = 50  # table rows per page in the browser

    def __post_init__(self) -> None:
        for name in ("max_pairs", "n_contexts", "context_chars", "hist_bins", "page_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"browser.{name} must be >= 1, got {getattr(self, name)}")


def pair_files(run_dir: str | Path) -> list[Path]:
    """The run's pair tables; a clear error when matching has not run yet."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SaematchError(f"{root} is not a run directory (it does not exist)")
    files = sorted(RunLayout(root).pairs_root().glob("*/pairs.parquet"))
    if not files:
        raise SaematchError(f"{root} has no matched pairs yet; run `saematch match` first")
    return files


def trim_context(ctx: str, chars: int) -> str:
    """Keep ``chars`` characters either side of the «unit» (with … where cut)."""
    lo, hi = ctx.find("«"), ctx.find("»")
    if lo < 0 or hi < lo:
        return ctx if len(ctx) <= 2 * chars else ctx[: 2 * chars] + "…"
    left = ctx[max(0, lo - chars):lo]
    right = ctx[hi + 1:hi + 1 + chars]
    return ("…" if lo > chars else "") + left + ctx[lo:hi + 1] + right + ("…" if len(ctx) - hi - 1 > chars else "")


def feature_histograms(X: Any, features_K: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Histograms ``[K, bins]`` of each feature's nonzero activations over ``[0, max]``, and the maxima ``[K]``.

    ``X`` is the CSR ``[units, d_sae]``; the work is one pass over its nonzeros
    (no dense matrix, no CSC copy).
    """
    pos = np.full(X.shape[1], -1, np.int64)
    pos[features_K] = np.arange(len(features_K))
    sel = pos[X.indices]
    m = (sel >= 0) & (X.data > 0)
    v, s = X.data[m].astype(np.float64), sel[m]
    top_K = np.zeros(len(features_K))
    np.maximum.at(top_K, s, v)
    b = np.minimum((v / top_K[s] * bins).astype(np.int64), bins - 1)
    counts = np.bincount(s * bins + b, minlength=len(features_K) * bins).reshape(len(features_K), bins)
    return counts, top_K


def _num(x: Any, digits: int = 4) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, digits)


def _with_calibration(t: pd.DataFrame, uni: Optional[pd.DataFrame]) -> pd.DataFrame:
    """Name the held-out correlation ``corr_test`` and join the pairs' universality, when the run has them."""
    if "heldout" in t and len(t) and bool(t["heldout"].all()):
        t = t.assign(corr_test=t["correlation"])
    if uni is None or t.empty:
        return t
    key = ["model_a", "layer_a", "model_b", "layer_b", "feature_a", "feature_b"]
    u = uni[key + ["universal", "twin_a", "twin_b"]].rename(columns={"twin_a": "twin_corr_a", "twin_b": "twin_corr_b"})
    return t.merge(u, on=key, how="left").assign(universal=lambda d: d["universal"].fillna(False).astype(bool))


def _layer_pairs(files: list[Path], cfg: BrowserConfig) -> tuple[list[dict], list[str], str, dict]:
    uni_path = files[0].parents[2] / "calibration" / "universality.parquet"
    uni = pd.read_parquet(uni_path) if uni_path.is_file() else None
    tables = [_with_calibration(pd.read_parquet(f), uni) for f in files]
    present = {c for t in tables for c in t.columns}
    held_out = "corr_test" in present
    sort_col = "corr_test" if held_out else "correlation"
    cols = ["feature_a", "feature_b", "correlation"] + [c for c in OPTIONAL_COLS if c in present]
    lps, totals = [], {"pairs": 0, "embedded": 0}
    for f, t in zip(files, tables):
        if t.empty:
            log.warning("empty pair table %s", f)
            continue
        n_total = len(t)
        keep = t["keep"].fillna(False).astype(bool).to_numpy() if "keep" in t else np.ones(n_total, bool)
        by = sort_col if sort_col in t else "correlation"
        mean_kept = _num(t.loc[keep, by].mean()) if keep.any() else None
        t = t.sort_values(by, ascending=False, na_position="last", kind="stable").head(cfg.max_pairs)
        flags = np.zeros(len(t), np.int64)
        for name, bit in FLAGS.items():
            if name in t:
                flags |= t[name].fillna(False).astype(bool).to_numpy() * bit
        vals = [t[c].to_numpy(np.float64) if c in t else np.full(len(t), np.nan) for c in cols]
        rows = [[int(r[0]), int(r[1])] + [_num(x) for x in r[2:]] + [int(fl)] for *r, fl in zip(*vals, flags)]
        first = t.iloc[0]
        lps.append({"id": f.parent.name, "ma": str(first["model_a"]), "la": int(first["layer_a"]),
                    "mb": str(first["model_b"]), "lb": int(first["layer_b"]), "n": n_total, "nk": int(keep.sum()),
                    "ne": len(rows), "mean_kept": mean_kept, "rows": rows})
        totals["pairs"] += n_total
        totals["embedded"] += len(rows)
    if not lps:
        raise SaematchError(f"{files[0].parent.parent.parent} has no matched pairs yet (its pair tables are empty)")
    totals["universal"] = "universal" in present
    return lps, cols + ["flags"], sort_col, totals


def _cards(root: Path, needed: dict[tuple[str, int], set[int]], cfg: BrowserConfig) -> tuple[dict, dict]:
    from saematch.features import load_csr

    lay, cards, missing = RunLayout(root), {}, {"cards": 0, "histograms": 0}
    for (model, layer), feats in sorted(needed.items()):
        folder = lay.features(model, layer)
        path = folder / "cards.parquet"
        out = cards.setdefault(model, {}).setdefault(str(layer), {})
        if not path.is_file():
            log.warning("no feature cards at %s; its features show without contexts", path)
            missing["cards"] += len(feats)
            continue
        c = pd.read_parquet(path, columns=["feature", "freq", "max_act", "contexts"])
        c = c[c["feature"].isin(feats)]
        hist: dict[int, list[int]] = {}
        try:
            X = load_csr(folder)
            f_K = c["feature"].to_numpy(np.int64)
            counts, _ = feature_histograms(X, f_K, cfg.hist_bins)
            hist = {int(f): counts[i].tolist() for i, f in enumerate(f_K)}
        except (ArtifactError, OSError, KeyError) as exc:
            log.warning("no activation histograms for %s layer %d: %s", model, layer, exc)
            missing["histograms"] += len(c)
        for f, fr, mx, ctx in zip(c["feature"], c["freq"], c["max_act"], c["contexts"]):
            out[str(int(f))] = [_num(fr, 6), _num(mx), hist.get(int(f)),
                                [trim_context(str(x), cfg.context_chars) for x in list(ctx)[: cfg.n_contexts]]]
        missing["cards"] += len(feats) - len(c)
    return cards, missing


def _grids(root: Path, lps: list[dict]) -> list[dict]:
    """Readouts for the layer x layer grid: similarity scores, and the pairs' own mean correlation."""
    grids: list[dict] = []
    path = RunLayout(root).similarity() / "scores.parquet"
    if path.is_file():
        s = pd.read_parquet(path)
        calibrated = "calibrated" in s and s["calibrated"].notna().any()
        extra = [c for c in OPTIONAL_SCORE_COLS if c in s]
        for (ma, mb, space, metric), g in s.groupby(["model_a", "model_b", "space", "metric"], sort=True):
            hi = bool(g["higher_is_similar"].iloc[0]) if "higher_is_similar" in g else True
            value = "calibrated" if calibrated else "score"
            cells = [[int(r["layer_a"]), int(r["layer_b"]), _num(r[value]), _num(r.get("p_value", float("nan"))),
                      {c: _num(r[c]) for c in extra + ["score"]}] for _, r in g.iterrows()]
            grids.append({"ma": ma, "mb": mb, "readout": f"{space} · {metric}", "hi": hi,
                          "value": "calibrated score" if calibrated else "score", "cells": cells})
    else:
        log.info("no similarity scores at %s; the grid shows the pairs' mean correlation only", path)
    cal = root / "calibration" / "readouts.parquet"
    if cal.is_file():
        r = pd.read_parquet(cal)
        for (ma, mb, readout), g in r.groupby(["model_a", "model_b", "readout"], sort=False):
            use = "calibrated" if "calibrated" in g and g["calibrated"].notna().any() else "score"
            cells = [[int(x["layer_a"]), int(x["layer_b"]), _num(x[use]), None,
                      {c: _num(x[c]) for c in ("score", "floor", "ceiling", "calibrated") if c in g}] for _, x in g.iterrows()]
            grids.insert(0, {"ma": ma, "mb": mb, "readout": f"calibrated · {readout}", "hi": True,
                             "value": "calibrated score" if use == "calibrated" else "score", "cells": cells})
    by_models: dict[tuple[str, str], list] = {}
    for lp in lps:
        by_models.setdefault((lp["ma"], lp["mb"]), []).append([lp["la"], lp["lb"], lp["mean_kept"], None, {}])
    for (ma, mb), cells in by_models.items():
        grids.append({"ma": ma, "mb": mb, "readout": "pairs · mean correlation of kept pairs", "hi": True,
                      "value": "mean correlation", "cells": cells})
    return grids


def browser_data(run_dir: str | Path, cfg: BrowserConfig = BrowserConfig()) -> dict[str, Any]:
    """Everything ``browser.html`` shows, as a JSON-ready dict, within the caps of ``cfg``."""
    root = Path(run_dir)
    lps, pcols, sort_col, totals = _layer_pairs(pair_files(root), cfg)
    needed: dict[tuple[str, int], set[int]] = {}
    for lp in lps:
        needed.setdefault((lp["ma"], lp["la"]), set()).update(r[0] for r in lp["rows"])
        needed.setdefault((lp["mb"], lp["lb"]), set()).update(r[1] for r in lp["rows"])
    cards, missing = _cards(root, needed, cfg)
    n_cards = sum(len(v) for m in cards.values() for v in m.values())
    left = totals["pairs"] - totals["embedded"]
    label = "held-out correlation" if sort_col == "corr_test" else "correlation"
    cap = (f"Embedded: the best {cfg.max_pairs} pairs of each layer pair by {label} "
           f"({totals['embedded']:,} of {totals['pairs']:,} pairs; {left:,} left out), with cards for their "
           f"{n_cards:,} features ({cfg.n_contexts} contexts each, ±{cfg.context_chars} characters). "
           f"For the rest, use `saematch query {root}` or rebuild with a larger browser.max_pairs.")
    if left:
        log.info("browser: %s", cap)
    notes = [f"{v:,} features have no {k}" for k, v in missing.items() if v]
    return {
        "meta": {"run": root.resolve().name, "built": time.strftime("%Y-%m-%d %H:%M"), "cap": cap, "notes": notes,
                 "cfg": asdict(cfg), "sort_col": "corr_test" if sort_col == "corr_test" else "correlation",
                 "sort_label": label, "n_pairs": totals["pairs"], "n_embedded": totals["embedded"],
                 "n_left_out": left, "n_cards": n_cards, "has_universal": totals["universal"]},
        "pcols": pcols, "flags": FLAGS, "lps": lps, "cards": cards, "grids": _grids(root, lps),
    }


def crosscoder_html(run_dir: str | Path, n_latents: int = 8) -> str:
    """A static section for the run's built crosscoders ('' when there are none); the crosscoder stage owns its
    view (:func:`saematch.crosscoder.report.browser_section`)."""
    from saematch.crosscoder.report import browser_section

    return browser_section(run_dir, n_latents)


def _asset(name: str) -> str:
    return resources.files("saematch.report").joinpath("assets", name).read_text(encoding="utf-8")


def render_browser(data: dict[str, Any], extra_html: str = "") -> str:
    """The self-contained HTML page for ``data`` (inline JS, CSS and JSON; no network); ``extra_html`` is
    static HTML placed below the app (the crosscoder section)."""
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    blob = blob.replace("<", "\\u003c")  # only inside JSON strings: the data can never close its script tag
    page = _asset("browser.html")
    title = f"saematch pairs · {data['meta']['run']}"
    for key, value in (("{{TITLE}}", _escape(title)), ("{{CSS}}", _asset("browser.css")),
                       ("{{JS}}", _asset("browser.js")), ("{{DATA}}", blob)):
        page = page.replace(key, value, 1)
    return page.replace("</main>", "</main>" + extra_html, 1) if extra_html else page


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_browser(run_dir: str | Path, cfg: BrowserConfig = BrowserConfig()) -> Path:
    """Write ``RUN/report/browser.html`` atomically and return its path."""
    t0 = time.perf_counter()
    data = browser_data(run_dir, cfg)
    text = render_browser(data, crosscoder_html(run_dir))
    path = RunLayout(Path(run_dir)).report() / "browser.html"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s (%.1f MB, %d layer pairs, %d pairs, %d cards) in %.1f s", path, len(text.encode()) / 2**20,
             len(data["lps"]), data["meta"]["n_embedded"], data["meta"]["n_cards"], time.perf_counter() - t0)
    return path
