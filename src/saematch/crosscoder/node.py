"""The crosscoder node of the pipeline graph, and its report section.

One node per (A model, A layer, B model): ``crosscoders/<A>_LXX__<B>/``.  The B
layer is chosen at build time as the best-matching B layer for the A layer by
held-out matched correlation (``calibration/best.parquet``, readout
``matched-corr``).  A control key ``MODEL@random`` trains the same crosscoder on
the random-init network's activations at the same layer pair: the floor of the
shared fraction.

Every crosscoder trains on the train documents of the run's split (``train_mask``) and is read out on
its test documents only.  A node trains, for each variant of ``crosscoder.variants`` (``plain``,
``dedicated``) and each of ``crosscoder.seeds`` seeds, one crosscoder under ``<variant>/seed_<s>/``:
``crosscoder.safetensors`` + ``cfg.json`` (the dictionary), ``latents.parquet`` + ``analysis.json``
(per-latent table and summary, see :mod:`saematch.crosscoder.diagnostics`), and for a real pair
``agreement.parquet`` + ``agreement.json`` (shared latents against the Hungarian pairs of the two separate
SAEs, see :mod:`saematch.crosscoder.agreement`).  A floor node also trains ``plain-whitened``: A@random's
activations with real A's covariance (:mod:`saematch.crosscoder.floors`).  The node's top-level
``latents.parquet`` / ``agreement.parquet`` stack every crosscoder's tables (columns ``variant``, ``seed``);
the manifest holds every crosscoder's summaries (``runs``), their spreads over seeds (``spread``, see
:mod:`saematch.crosscoder.summary`), the decoder-penalty lambda and, for ``decoder_penalty: rule``, the
rule with its grid and table (also ``penalty_rule.json``); manifest last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saematch.errors import SaematchError

log = logging.getLogger(__name__)
READOUT = "matched-corr"


def best_layer_b(run_root: Path, model_a: str, layer_a: int, model_b: str) -> tuple[int, float]:
    """B's best-matching layer for ``layer_a`` of ``model_a`` (a configured model) and its held-out score."""
    path = Path(run_root) / "calibration" / "best.parquet"
    if not path.is_file():
        raise SaematchError(f"{path} is missing: the crosscoder picks its B layer from the calibrate node")
    best = pd.read_parquet(path)
    sel = best[(best["readout"] == READOUT) & (best["model_a"] == model_a) & (best["layer_a"] == layer_a)
               & (best["model_b"] == model_b)]
    if sel.empty:
        raise SaematchError(f"{path} has no '{READOUT}' row for {model_a} layer {layer_a} vs {model_b}; "
                            f"is layer {layer_a} among {model_a}'s configured layers?")
    row = sel.iloc[0]
    return int(row["layer_b"]), float(row["score"])


def latent_scaling_summary(latents: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """How many exclusive-looking latents Latent Scaling flags, and why.

    ``suspect``: exclusive latents with ``nu > threshold``; of them ``shrinkage``
    (the other model's share sits in its error, ``nu_err > threshold``: Complete
    Shrinkage) and ``decoupling`` (other latents reconstruct it, ``nu_rec > threshold``:
    Latent Decoupling).  A latent can show both.  ``scaling_shared_fraction``: the share of all latents
    that are live, of any class, with ``nu > threshold`` (both models carry them, by Latent Scaling).
    """
    out: dict[str, Any] = {"threshold": threshold}
    for cls in ("a_only", "b_only"):
        sel = latents[latents["class"] == cls]
        sus = sel[sel["nu"] > threshold]
        out[cls] = {"n": int(len(sel)), "suspect": int(len(sus)),
                    "suspect_fraction": float(len(sus) / len(sel)) if len(sel) else float("nan"),
                    "shrinkage": int((sus["nu_err"] > threshold).sum()),
                    "decoupling": int((sus["nu_rec"] > threshold).sum()),
                    "median_nu": float(sel["nu"].median()) if sel["nu"].notna().any() else float("nan")}
    live = latents["class"] != "dead"
    # a functional view of sharing: the other model carries the latent's direction (by Latent Scaling),
    # whatever its decoder norms say; over all latents, a dead one counted as not shared
    out["scaling_shared_fraction"] = float((live & (latents["nu"] > threshold)).mean()) if len(latents) else float("nan")
    n_excl = out["a_only"]["n"] + out["b_only"]["n"]
    n_sus = out["a_only"]["suspect"] + out["b_only"]["suspect"]
    out.update(n_exclusive=n_excl, n_suspect=n_sus, suspect_fraction=n_sus / n_excl if n_excl else float("nan"))
    return out


def _agreement(ctx: Any, cc: Any, sources: list, ka: str, la: int, kb: str, lb: int, test_rows: np.ndarray,
               latents: pd.DataFrame, out: Path) -> Any:
    """Shared latents against the Hungarian pairs of (A la, B lb), on the crosscoder's test units only."""
    from saematch.crosscoder.agreement import latent_activations, run_agreement
    from saematch.features.encode import load_csr

    cfg = ctx.cfg.crosscoder
    n_rows = sources[0].n_rows
    rows = test_rows[:cfg.analysis_rows]
    pairs = pd.read_parquet(ctx.layout.pairs(ka, la, kb, lb) / "pairs.parquet",
                            columns=["feature_a", "feature_b", "correlation"])
    XA, XB = load_csr(ctx.layout.features(ka, la)), load_csr(ctx.layout.features(kb, lb))
    if XA.shape[0] != n_rows or XB.shape[0] != n_rows:
        raise SaematchError(f"feature activations cover {XA.shape[0]} / {XB.shape[0]} units, the activation stores "
                            f"{n_rows}: the features of {ka} L{la} / {kb} L{lb} are from another corpus")
    Z = latent_activations(cc, sources, rows=rows)
    return run_agreement(Z, XA[rows], XB[rows], pairs, latents, cfg.top_units, out=out)


def node_rows(ctx: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(train units, test units) of the run's document split: the crosscoder trains on the first only and every
    held-out readout uses the second only."""
    from saematch.matching.stage import train_mask

    mask = np.asarray(train_mask(ctx), bool)
    if len(mask) != n_rows:
        raise SaematchError(f"the run's split covers {len(mask)} units, the activation stores {n_rows}: rebuild the "
                            f"activations or the split")
    return np.nonzero(mask)[0], np.nonzero(~mask)[0]


def plan_runs(cfg: Any, floor: bool) -> list[tuple[str, str, int]]:
    """(run name, input, seed) of every crosscoder a node trains: each variant over the seeds on the raw
    inputs, and on a floor the plain crosscoder on the spectrum-matched inputs too."""
    inputs = ["raw"] + (["whitened"] if floor and cfg.whiten_floor else [])
    out = []
    for v in cfg.variants:
        for inp in inputs:
            if inp == "whitened" and v != "plain":
                continue
            out += [(v if inp == "raw" else f"{v}-whitened", inp, cfg.seed + i) for i in range(cfg.seeds)]
    return out


def _concat(frames: list[pd.DataFrame], path: Path) -> Path:
    from saematch.artifacts import atomic_path

    with atomic_path(path) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    return path


def build(node: Any, ctx: Any, chash: str) -> None:
    """Train and analyse the crosscoders of ``node.key = (A, A layer, B)`` at B's best-matching layer: every
    variant over ``crosscoder.seeds`` seeds, on the run's train documents; readouts on its test documents."""
    from dataclasses import replace

    from saematch.artifacts import Stage, write_json
    from saematch.crosscoder.data import as_sources
    from saematch.crosscoder.diagnostics import analyse_crosscoder
    from saematch.crosscoder.floors import spectrum_matched
    from saematch.crosscoder.rule import penalty_rule
    from saematch.crosscoder.summary import aggregate
    from saematch.crosscoder.train import train_crosscoder
    from saematch.devices import stage_device
    from saematch.graph.plan import variant

    ka, la, kb = node.key
    cfg, out = ctx.cfg.crosscoder, Path(node.path)
    stage = Stage(out)
    stage.invalidate()
    va = variant(ka)
    lb, score = best_layer_b(ctx.layout.root, va.source, la, kb)
    raw = as_sources([ctx.store(ka, la), ctx.store(kb, lb)])
    train_rows, test_rows = node_rows(ctx, raw[0].n_rows)
    label = f"{ka}_L{la:02d}__{kb}_L{lb:02d}"
    penalty = cfg.penalty()
    rule = penalty_rule().to_dict() if cfg.decoder_penalty == "rule" else None
    files: list[Path] = []
    if rule is not None:
        write_json(out / "penalty_rule.json", rule)
        files.append(out / "penalty_rule.json")
    log.info("crosscoder %s: B layer %d is the best match of A layer %d (held-out matched corr %.3f); %d train and "
             "%d test units; lambda %g", label, lb, la, score, len(train_rows), len(test_rows), penalty)
    inputs = {"raw": raw}
    records, lat_frames, agr_frames = [], [], []
    for name, inp, seed in plan_runs(cfg, va.kind == "random"):
        if inp not in inputs:  # A@random whitened and coloured to real A's covariance, fitted on train units
            inputs[inp] = [spectrum_matched(raw[0], ctx.store(va.source, la), train_rows), raw[1]]
        srcs, d = inputs[inp], out / name / f"seed_{seed}"
        rcfg = replace(cfg, seed=seed, decoder_penalty=penalty)
        res = train_crosscoder(srcs, rcfg, d, names=[ka, kb], logger=ctx.logger, log_prefix=f"{label}/{name}/{seed}/",
                               device=stage_device(ctx.cfg, "crosscoder"), train_rows=train_rows,
                               dedicated_share=cfg.dedicated_share if name.startswith("dedicated") else 0.0)
        an = analyse_crosscoder(res.crosscoder, srcs, rcfg, out=d, train_rows=train_rows, test_rows=test_rows)
        files += [*res.files, *an.files]
        rec = {"variant": name, "seed": seed, "summary": an.summary,
               "latent_scaling": latent_scaling_summary(an.latents, cfg.scaling_threshold), "agreement": None,
               "train": {"steps": res.steps, "resumed_from": res.resumed_from, "n_train": res.n_train, **res.metrics}}
        lat_frames.append(an.latents.assign(variant=name, seed=seed))
        if va.kind == "model":
            agr = _agreement(ctx, res.crosscoder, srcs, ka, la, kb, lb, test_rows, an.latents, d)
            files += list(agr.files)
            rec["agreement"] = agr.summary
            agr_frames.append(agr.table.assign(variant=name, seed=seed))
        records.append(rec)
        s = an.summary
        log.info("crosscoder %s %s seed %d: shared %.1f%%, A-only %.1f%%, B-only %.1f%%, dead %.1f%% of %d latents; "
                 "FVU %.3f / %.3f, L0 %.1f", label, name, seed, 100 * s["shared_fraction"], 100 * s["a_only_fraction"],
                 100 * s["b_only_fraction"], 100 * s["dead_fraction"], s["n_latents"], s["fvu_a"], s["fvu_b"], s["l0"])
    files.append(_concat(lat_frames, out / "latents.parquet"))
    if agr_frames:
        files.append(_concat(agr_frames, out / "agreement.parquet"))
    stage.finish(chash, files, model_a=ka, layer_a=la, model_b=kb, layer_b=lb, layer_b_score=score,
                 control="random-init" if va.kind == "random" else None, penalty=penalty, penalty_rule=rule,
                 split_digest=ctx.split.digest, n_train_units=int(len(train_rows)), n_test_units=int(len(test_rows)),
                 runs=records, spread=aggregate(records))


def report_section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """The report's crosscoder section: (title, self-contained HTML, figures written under ``out``)."""
    from saematch.crosscoder.report import section

    return section(ctx, Path(out))


def crosscoder_nodes(ctx: Any) -> list[Any]:
    """The run's crosscoder nodes, from the plan (the one place that knows their paths)."""
    from saematch.graph.plan import build_plan

    return build_plan(ctx.cfg).stage("crosscoder")

