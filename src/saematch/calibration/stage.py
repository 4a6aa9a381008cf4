"""The calibrate node: every readout of every layer pair between its floor and its ceiling, and the
universality of every matched pair.

Writes under ``RUN/calibration/``: ``readouts.parquet`` (one row per layer pair and readout),
``universality.parquet`` (one row per matched pair), ``fractions.parquet`` (universal
fraction per layer pair and per layer), ``best.parquet`` (each A layer's best-matching B
layer by held-out matched correlation, with CIs and relative depths), manifest last.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _side(ctx: Any, ka: str, la: int, kb: str, lb: int, units: np.ndarray, perm: Optional[np.ndarray] = None) -> Any:
    from saematch.calibration.readouts import Side

    path = ctx.layout.pairs(ka, la, kb, lb) / "pairs.parquet"
    if not path.is_file():
        return None
    pairs = pd.read_parquet(path, columns=["feature_a", "feature_b", "correlation", "corr_train"])
    src_a = ka.split("@")[0] if ka.endswith("@shuffle") else ka
    XA = _csr(ctx, src_a, la)
    XA = XA[perm] if perm is not None else XA
    return Side(pairs, _dec(ctx, src_a, la), _dec(ctx, kb, lb), XA[units], _csr(ctx, kb, lb)[units])


def _dec(ctx: Any, key: str, layer: int) -> np.ndarray:
    from saematch.sae.load import load_sae_dir

    return ctx.memo(("dec", key, layer),
                    lambda: load_sae_dir(ctx.layout.sae(key, layer)).W_dec.detach().float().numpy())


def _csr(ctx: Any, key: str, layer: int) -> Any:
    from saematch.features.encode import load_csr

    return ctx.memo(("csr", key, layer), lambda: load_csr(ctx.layout.features(key, layer)))


def _heldout(pairs: pd.DataFrame, n_train: int, n_test: int) -> Any:
    from saematch.calibration.heldout import HeldOut

    return HeldOut(pairs["feature_a"].to_numpy(np.int64), pairs["feature_b"].to_numpy(np.int64),
                   pairs["corr_train"].to_numpy(np.float64), pairs["correlation"].to_numpy(np.float64), n_train, n_test)


def _pair_job(main, floor, twins, raw, floor_kind, cal, max_pairs, unit_dims, labels, n_feat, n_split):
    """One layer pair (a top-level function, so worker processes can run it)."""
    from saematch.calibration.readouts import layer_pair_readouts
    from saematch.calibration.universality import run_universality

    rows = [{**labels, **r} for r in layer_pair_readouts(main, floor, twins, raw, floor_kind, cal, max_pairs, unit_dims)]
    uni = None
    if floor is not None and all(t is not None for t in twins):
        res = run_universality(_heldout(main.pairs, *n_split), _heldout(twins[0].pairs, *n_split),
                               _heldout(twins[1].pairs, *n_split), _heldout(floor.pairs, *n_split), n_feat[0], n_feat[1],
                               cal, None, labels)
        uni = res.pairs
    return rows, uni


def build(node: Any, ctx: Any, chash: str) -> None:
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from saematch.artifacts import Stage, write_json
    from saematch.calibration.universality import universal_fractions
    from saematch.graph.plan import layer_pairs, model_pairs
    from saematch.matching.stage import train_mask
    from saematch.matching.store import write_parquet

    cfg, cal, ctl = ctx.cfg, ctx.cfg.calibration, ctx.cfg.controls
    out = node.path
    stage = Stage(out)
    stage.invalidate()
    mask = train_mask(ctx)
    n_units = len(mask)
    rng = np.random.default_rng([cal.seed, 5])
    raw_units = np.sort(rng.choice(n_units, size=min(cfg.similarity.max_units, n_units), replace=False))
    test = np.flatnonzero(~mask)
    test_units = np.sort(rng.choice(test, size=min(cal.svcca_max_units, len(test)), replace=False))
    unit_dims = max(3, len(test_units) // cal.min_items_per_dim)
    rand_key = (ctl.random_model or cfg.models[0].key) if ctl.random_init else None
    perm = np.random.default_rng([ctl.shuffle_seed, 7]).permutation(n_units) if ctl.shuffle else None
    jobs, labels_all = [], []
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            labels = {"model_a": a.key, "layer_a": la, "model_b": b.key, "layer_b": lb}
            main = _side(ctx, a.key, la, b.key, lb, test_units)
            A = ctx.store(a.key, la).take(raw_units).float().numpy()
            B = ctx.store(b.key, lb).take(raw_units).float().numpy()
            if rand_key in (a.key, b.key):
                on_a = rand_key == a.key
                ka, kb = (f"{a.key}@random", b.key) if on_a else (a.key, f"{b.key}@random")
                floor, kind = _side(ctx, ka, la, kb, lb, test_units), "random-init"
                R = ctx.store(ka if on_a else kb, la if on_a else lb).take(raw_units).float().numpy()
                raw = (A, B, R) if on_a else (B, A, R)  # floor = metric(R, other side); the metrics are symmetric
            elif perm is not None:
                floor, kind = _side(ctx, f"{a.key}@shuffle", la, b.key, lb, test_units, perm), "shuffle"
                raw = (A, B, ctx.store(a.key, la).take(perm[raw_units]).float().numpy())  # row i of A@shuffle is A's perm[i]
            else:
                floor, kind, raw = None, "none", (A, B, None)
            twins = tuple(_side(ctx, m.key, L, f"{m.key}@seed{ctl.twin_seed}", L, test_units) if ctl.seed else None
                          for m, L in ((a, la), (b, lb)))
            n_feat = (_dec(ctx, a.key, la).shape[0], _dec(ctx, b.key, lb).shape[0])
            jobs.append(delayed(_pair_job)(main, floor, twins, raw, kind, cal, cal.max_pairs, unit_dims,
                                           labels, n_feat, (int(mask.sum()), int((~mask).sum()))))
            labels_all.append(labels)
    workers = cfg.similarity.workers or os.cpu_count() or 1
    results = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator")(jobs)
    rows, unis = [], []
    for r, u in tqdm(results, total=len(jobs), desc="calibrate", unit="layer pair", disable=None):
        rows += r
        if u is not None:
            unis.append(u)
    readouts = pd.DataFrame(rows)
    files = [out / "readouts.parquet"]
    write_parquet(readouts, out / "readouts.parquet")
    best = best_layers(readouts, cfg, ctx)
    summary: dict[str, Any] = {"readouts": summarise(readouts, best)}
    if unis:
        uni = pd.concat(unis, ignore_index=True)
        keys = ["model_a", "layer_a", "model_b", "layer_b"]
        frac = pd.concat([universal_fractions(uni, keys, cal.n_bootstrap, cal.seed, cal.ci_level).assign(level="layer pair"),
                          universal_fractions(uni, ["model_a", "layer_a"], cal.n_bootstrap, cal.seed, cal.ci_level)
                          .assign(level="layer of A"),
                          universal_fractions(uni, ["model_b", "layer_b"], cal.n_bootstrap, cal.seed, cal.ci_level)
                          .assign(level="layer of B")], ignore_index=True)
        write_parquet(uni, out / "universality.parquet")
        write_parquet(frac, out / "fractions.parquet")
        files += [out / "universality.parquet", out / "fractions.parquet"]
        summary["universal_fraction"] = float(uni["universal"].mean())
    write_parquet(best, out / "best.parquet")
    files.append(out / "best.parquet")
    write_json(out / "summary.json", summary)
    files.append(out / "summary.json")
    stage.finish(chash, files, summary=summary, n_raw_units=int(len(raw_units)), n_test_units=int(len(test_units)),
                 svcca_units_dims=int(unit_dims), floor=("random-init" if rand_key else "shuffle" if perm is not None else "none"))


def best_layers(readouts: pd.DataFrame, cfg: Any, ctx: Any) -> pd.DataFrame:
    """Per readout and A layer: the best B layer by score, with its CIs and both relative depths."""
    rows = []
    for (readout, ma, mb, la), g in readouts.groupby(["readout", "model_a", "model_b", "layer_a"]):
        row = g.loc[g["score"].idxmax()]
        na, nb = ctx.n_layers(ctx.spec(ma)), ctx.n_layers(ctx.spec(mb))
        rows.append({**{k: row.get(k) for k in ("readout", "model_a", "layer_a", "model_b", "layer_b", "score",
                                                 "score_ci_low", "score_ci_high", "floor", "ceiling", "calibrated",
                                                 "calibrated_ci_low", "calibrated_ci_high", "uninformative")},
                     "depth_a": (la + 1) / na, "depth_b": (int(row["layer_b"]) + 1) / nb})
    return pd.DataFrame(rows)


def summarise(readouts: pd.DataFrame, best: pd.DataFrame) -> dict:
    """Per readout: layer pairs, how many are uninformative, mean score/floor/ceiling, the mean calibrated score
    over the informative layer pairs only (NaN when none is: such a readout is not headlined), and at the
    best-matching layer pairs how often floor < score < ceiling."""
    out = {}
    for name, g in readouts.groupby("readout", sort=False):
        b = best[best.readout == name]
        ordered = int(((b["floor"] < b["score"]) & (b["score"] < b["ceiling"])).sum()) if "floor" in b else 0
        informative = g[~g["uninformative"].fillna(True).astype(bool)]
        out[name] = {"n_layer_pairs": int(len(g)), "n_uninformative": int(len(g) - len(informative)),
                     **{f"mean_{k}": float(g[k].mean()) for k in ("score", "floor", "ceiling") if k in g},
                     "mean_calibrated": float(informative["calibrated"].mean()) if len(informative) and
                     "calibrated" in g else float("nan"),
                     "best_ordered": ordered, "n_best": int(len(b))}
    return out
