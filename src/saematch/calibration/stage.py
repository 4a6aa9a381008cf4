"""The calibrate node: every readout of every layer pair beside its floors and ceiling, on test documents;
the best B layer for each A layer chosen on train documents; universality.

Writes under ``RUN/calibration/``: ``readouts.parquet`` (one row per layer pair and readout),
``universality.parquet`` (one row per matched pair), ``fractions.parquet`` (the share of A's live features
with a universal partner, per layer pair and per A layer at its chosen B layer), ``best.parquet`` (each A
layer's B layer chosen on train documents, with its held-out score), ``summary.json``, manifest last.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

EMBED_KEYS = {"embed_a": "A", "embed_b": "B"}


def _csr(ctx: Any, key: str, layer: int) -> Any:
    from saematch.features.encode import load_csr

    return ctx.memo(("csr", key, layer), lambda: load_csr(ctx.layout.features(key, layer)))


def _dec(ctx: Any, key: str, layer: int) -> np.ndarray:
    from saematch.sae.load import load_sae_dir

    return ctx.memo(("dec", key, layer),
                    lambda: load_sae_dir(ctx.layout.sae(key, layer)).W_dec.detach().float().numpy())


def _matching(ctx: Any, key: tuple, test: np.ndarray, group: np.ndarray, sub: np.ndarray) -> Any:
    """A matching's pairs with per-document sums over the test documents and its sampled test-unit activations."""
    from saematch.calibration.readouts import Matching
    from saematch.matching.docstats import pair_doc_stats

    ka, la, kb, lb = key
    pairs = pd.read_parquet(ctx.layout.pairs(ka, la, kb, lb) / "pairs.parquet",
                            columns=["feature_a", "feature_b", "correlation", "corr_train"])
    XA = ctx.memo(("csr-test", ka, la), lambda: _csr(ctx, ka, la)[test])
    XB = ctx.memo(("csr-test", kb, lb), lambda: _csr(ctx, kb, lb)[test])
    stats = pair_doc_stats(XA, XB, pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy(), group)
    return Matching(pairs, stats, _dec(ctx, ka, la), _dec(ctx, kb, lb), XA[sub], XB[sub])


def _pair_job(inp: Any, cal: Any, unit_dims: int, live_a: int) -> tuple[list[dict], pd.DataFrame, dict]:
    """One layer pair (a top-level function, so worker processes can run it)."""
    from saematch.calibration.readouts import layer_pair_readouts
    from saematch.calibration.universality import universality_of

    rows = layer_pair_readouts(inp, cal, unit_dims)
    uni, frac = universality_of(inp, cal, live_a)
    return rows, uni, frac


def _sample(units: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(units, size=min(n, len(units)), replace=False))


def build(node: Any, ctx: Any, chash: str) -> None:
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from saematch.artifacts import Stage, write_json
    from saematch.calibration.readouts import LayerPairInputs
    from saematch.graph.plan import floor_matches, layer_pairs, model_pairs
    from saematch.matching.store import write_parquet

    cfg, cal, ctl = ctx.cfg, ctx.cfg.calibration, ctx.cfg.controls
    out = node.path
    stage = Stage(out)
    stage.invalidate()
    split = ctx.split
    test, train = np.flatnonzero(split.test_mask), np.flatnonzero(split.train_mask)
    group = split.groups_of(test)
    rng = np.random.default_rng([cal.seed, 5])
    sub = np.sort(rng.choice(len(test), size=min(cfg.similarity.max_units, len(test)), replace=False))
    raw_units, raw_train = test[sub], _sample(train, cfg.similarity.max_units, rng)
    unit_group = np.unique(group[sub], return_inverse=True)[1].ravel()
    unit_dims = max(3, len(sub) // (2 * cal.min_items_per_dim))  # valid on half-samples too
    acts = lambda k, L, u: ctx.store(k, L).take(u).float().numpy()  # noqa: E731
    jobs = []
    for a, b in model_pairs(cfg):
        live_cache: dict[int, int] = {}
        for la, lb in layer_pairs(cfg, a, b):
            labels = {"model_a": a.key, "layer_a": la, "model_b": b.key, "layer_b": lb}
            fm = {k: v for k, v in floor_matches(cfg, a, la, b, lb).items() if k != "shuffle"}
            raw = {"A": acts(a.key, la, raw_units), "B": acts(b.key, lb, raw_units)}
            for name, (ka, fla, kb, flb) in fm.items():
                side_a = name.endswith("_a")
                raw[name] = acts(ka, fla, raw_units) if side_a else acts(kb, flb, raw_units)
            twins = tuple(_matching(ctx, (m.key, L, f"{m.key}@seed{ctl.twin_seed}", L), test, group, sub)
                          if ctl.seed and not m.pretrained else None for m, L in ((a, la), (b, lb)))
            inp = LayerPairInputs(_matching(ctx, (a.key, la, b.key, lb), test, group, sub),
                                  {k: _matching(ctx, v, test, group, sub) for k, v in fm.items()}, twins, raw,
                                  {"A": acts(a.key, la, raw_train), "B": acts(b.key, lb, raw_train)}, unit_group, labels)
            if la not in live_cache:
                cards = pd.read_parquet(ctx.layout.features(a.key, la) / "cards.parquet", columns=["dead"])
                live_cache[la] = int((~cards["dead"].to_numpy(bool)).sum())
            jobs.append(delayed(_pair_job)(inp, cal, unit_dims, live_cache[la]))
    workers = cfg.similarity.workers or os.cpu_count() or 1
    results = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator")(jobs)
    rows, unis, fracs = [], [], []
    for r, u, f in tqdm(results, total=len(jobs), desc="calibrate", unit="layer pair", disable=None):
        rows += r
        if u is not None:
            unis.append(u)
            fracs.append(f)
    readouts = pd.DataFrame(rows)
    best = best_layers(readouts, ctx)
    files = []
    for name, df in (("readouts", readouts), ("best", best)):
        write_parquet(df, out / f"{name}.parquet")
        files.append(out / f"{name}.parquet")
    summary: dict[str, Any] = {"readouts": summarise(readouts, best), "split": split.counts(),
                               "split_method": split.method}
    if unis:
        frac = pd.DataFrame(fracs).assign(level="layer pair")
        chosen = best[best.readout == "matched-corr"][["model_a", "layer_a", "model_b", "layer_b"]]
        at_best = frac.merge(chosen, on=["model_a", "layer_a", "model_b", "layer_b"]).assign(level="layer of A (chosen B)")
        frac = pd.concat([frac, at_best], ignore_index=True)
        for name, df in (("universality", pd.concat(unis, ignore_index=True)), ("fractions", frac)):
            write_parquet(df, out / f"{name}.parquet")
            files.append(out / f"{name}.parquet")
        summary["universal_share_at_best"] = {f"{r.model_a}:L{r.layer_a}": float(r.fraction) for r in at_best.itertuples()}
    write_json(out / "summary.json", summary)
    files.append(out / "summary.json")
    stage.finish(chash, files, summary=summary, n_test_units=int(len(raw_units)), n_train_units=int(len(raw_train)),
                 n_test_docs=int(group.max() + 1), svcca_units_dims=int(unit_dims), split_digest=split.digest)


def best_layers(readouts: pd.DataFrame, ctx: Any) -> pd.DataFrame:
    """Per readout and A layer: the B layer chosen on train documents (the readout's train score where it has one,
    else matched correlation's train choice), reported with its held-out score and CIs, the B layer the test
    documents would have picked (for transparency, never used), and both relative depths."""
    from saematch.graph.plan import variant

    rows = []
    keep = ("score", "score_ci_low", "score_ci_high", "floor", "floor_kind", "ceiling", "calibrated",
            "calibrated_ci_low", "calibrated_ci_high", "calibrated_random", "calibrated_token", "calibrated_kind",
            "uninformative", "resamples")
    mc = readouts[readouts.readout == "matched-corr"]
    mc_choice = {k: int(g.loc[g["score_train"].idxmax(), "layer_b"]) for k, g in
                 mc.groupby(["model_a", "model_b", "layer_a"])} if len(mc) else {}
    for (readout, ma, mb, la), g in readouts.groupby(["readout", "model_a", "model_b", "layer_a"]):
        if g["score_train"].notna().any():
            row, by = g.loc[g["score_train"].idxmax()], "own train score"
        else:
            lb = mc_choice.get((ma, mb, la))
            if lb is None:
                continue
            row, by = g[g.layer_b == lb].iloc[0], "matched-corr train score"
        na, nb = ctx.n_layers(ctx.spec(variant(ma).source)), ctx.n_layers(ctx.spec(variant(mb).source))
        test_pick = int(g.loc[g["score"].idxmax(), "layer_b"]) if g["score"].notna().any() else -1
        rows.append({"readout": readout, "model_a": ma, "layer_a": la, "model_b": mb, "layer_b": int(row["layer_b"]),
                     "chosen_by": by, "score_train": row["score_train"], **{k: row.get(k) for k in keep},
                     "test_would_pick": test_pick, "depth_a": (la + 1) / na, "depth_b": (int(row["layer_b"]) + 1) / nb})
    return pd.DataFrame(rows)


def summarise(readouts: pd.DataFrame, best: pd.DataFrame) -> dict:
    """Per readout: layer pairs, how many are uninformative, mean score/floors/ceiling, the mean calibrated score
    over the informative layer pairs only (NaN when none is: such a readout is not headlined), and at the
    chosen layer pairs how often floor < score < ceiling."""
    out = {}
    for name, g in readouts.groupby("readout", sort=False):
        b = best[best.readout == name] if len(best) else best
        ordered = int(((b["floor"] < b["score"]) & ((b["score"] < b["ceiling"]) | b["ceiling"].isna())).sum()) if len(b) else 0
        informative = g[~g["uninformative"].fillna(True).astype(bool)]
        out[name] = {"n_layer_pairs": int(len(g)), "n_uninformative": int(len(g) - len(informative)),
                     "calibrated_kind": str(g["calibrated_kind"].iloc[0]),
                     **{f"mean_{k}": float(g[k].mean()) for k in ("score", "floor", "floor_random", "floor_token",
                                                                 "ceiling") if k in g},
                     **{f"mean_{k}": float(informative[k].mean()) if len(informative) else float("nan")
                        for k in ("calibrated", "calibrated_random", "calibrated_token") if k in g},
                     "best_ordered": ordered, "n_best": int(len(b))}
    return out
