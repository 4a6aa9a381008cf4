"""The crosscoder node of the pipeline graph, and its report section.

One node per (A model, A layer, B model): ``crosscoders/<A>_LXX__<B>/``.  The B
layer is chosen at build time as the best-matching B layer for the A layer by
held-out matched correlation (``calibration/best.parquet``, readout
``matched-corr``).  A control key ``MODEL@random`` trains the same crosscoder on
the random-init network's activations at the same layer pair: the floor of the
shared fraction.

Writes ``crosscoder.safetensors`` + ``cfg.json`` (the dictionary),
``latents.parquet`` + ``analysis.json`` (per-latent table and summary, see
:mod:`saematch.crosscoder.diagnostics`), and for a real pair
``agreement.parquet`` + ``agreement.json`` (shared latents against the Hungarian
pairs of the two separate SAEs, see :mod:`saematch.crosscoder.agreement`), all
measured on the crosscoder's held-out units; manifest last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
    Latent Decoupling).  A latent can show both.  ``scaling_shared_fraction``: live latents of any
    class with ``nu > threshold`` (both models carry them, by Latent Scaling).
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
    live = latents[latents["class"] != "dead"]
    # a functional view of sharing: the other model carries the latent's direction (by Latent Scaling),
    # whatever its decoder norms say (they separate only after long training)
    out["scaling_shared_fraction"] = float((live["nu"] > threshold).mean()) if len(live) else float("nan")
    n_excl = out["a_only"]["n"] + out["b_only"]["n"]
    n_sus = out["a_only"]["suspect"] + out["b_only"]["suspect"]
    out.update(n_exclusive=n_excl, n_suspect=n_sus, suspect_fraction=n_sus / n_excl if n_excl else float("nan"))
    return out


def _agreement(ctx: Any, cc: Any, sources: list, ka: str, la: int, kb: str, lb: int, n_train: int, out: Path) -> Any:
    """Shared latents against the Hungarian pairs of (A la, B lb), on the crosscoder's held-out units."""
    from saematch.crosscoder.agreement import latent_activations, run_agreement
    from saematch.features.encode import load_csr

    cfg = ctx.cfg.crosscoder
    n_rows = sources[0].n_rows
    stop = min(n_rows, n_train + cfg.analysis_rows)
    pairs = pd.read_parquet(ctx.layout.pairs(ka, la, kb, lb) / "pairs.parquet",
                            columns=["feature_a", "feature_b", "correlation"])
    XA, XB = load_csr(ctx.layout.features(ka, la)), load_csr(ctx.layout.features(kb, lb))
    if XA.shape[0] != n_rows or XB.shape[0] != n_rows:
        raise SaematchError(f"feature activations cover {XA.shape[0]} / {XB.shape[0]} units, the activation stores "
                            f"{n_rows}: the features of {ka} L{la} / {kb} L{lb} are from another corpus")
    Z = latent_activations(cc, sources, n_train, stop)
    latents = pd.read_parquet(out / "latents.parquet")
    return run_agreement(Z, XA[n_train:stop], XB[n_train:stop], pairs, latents, cfg.top_units, out=out)


def build(node: Any, ctx: Any, chash: str) -> None:
    """Train and analyse the crosscoder of ``node.key = (A, A layer, B)`` at B's best-matching layer."""
    from saematch.artifacts import Stage
    from saematch.crosscoder.data import as_sources
    from saematch.crosscoder.diagnostics import analyse_crosscoder
    from saematch.crosscoder.train import train_crosscoder
    from saematch.devices import stage_device
    from saematch.graph.plan import variant

    ka, la, kb = node.key
    cfg, out = ctx.cfg.crosscoder, Path(node.path)
    stage = Stage(out)
    stage.invalidate()
    va = variant(ka)
    lb, score = best_layer_b(ctx.layout.root, va.source, la, kb)
    sources = as_sources([ctx.store(ka, la), ctx.store(kb, lb)])
    label = f"{ka}_L{la:02d}__{kb}_L{lb:02d}"
    log.info("crosscoder %s: B layer %d is the best match of A layer %d (held-out matched corr %.3f), %d units",
             label, lb, la, score, sources[0].n_rows)
    res = train_crosscoder(sources, cfg, out, names=[ka, kb], logger=ctx.logger, log_prefix=f"{label}/",
                           device=stage_device(ctx.cfg, "crosscoder"))
    an = analyse_crosscoder(res.crosscoder, sources, cfg, out=out)
    files = [*res.files, *an.files]
    summary = {k: an.summary[k] for k in ("shared_fraction", "a_only_fraction", "b_only_fraction", "n_live",
                                          "n_latents", "n_heldout_units", "fvu_a", "fvu_b", "map_r2_ab", "map_r2_ba")}
    scaling = latent_scaling_summary(an.latents, cfg.scaling_threshold)
    agreement = None
    if va.kind == "model":
        agr = _agreement(ctx, res.crosscoder, sources, ka, la, kb, lb, res.n_train, out)
        files += list(agr.files)
        agreement = agr.summary
    stage.finish(chash, files, model_a=ka, layer_a=la, model_b=kb, layer_b=lb, layer_b_score=score,
                 control="random-init" if va.kind == "random" else None, summary=summary, latent_scaling=scaling,
                 agreement=agreement, train={"steps": res.steps, "resumed_from": res.resumed_from,
                                             "n_train": res.n_train, **res.metrics})
    log.info("crosscoder %s: shared %.1f%%, A-only %.1f%%, B-only %.1f%% of %d live latents; %d of %d exclusive "
             "latents suspect by Latent Scaling; FVU %.3f / %.3f", label, 100 * summary["shared_fraction"],
             100 * summary["a_only_fraction"], 100 * summary["b_only_fraction"], summary["n_live"],
             scaling["n_suspect"], scaling["n_exclusive"], summary["fvu_a"], summary["fvu_b"])


def report_section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """The report's crosscoder section: (title, self-contained HTML, figures written under ``out``)."""
    from saematch.crosscoder.report import section

    return section(ctx, Path(out))


def crosscoder_nodes(ctx: Any) -> list[Any]:
    """The run's crosscoder nodes, from the plan (the one place that knows their paths)."""
    from saematch.graph.plan import build_plan

    return build_plan(ctx.cfg).stage("crosscoder")

