"""The transfer node of the pipeline graph: one A layer, paired at build time with its best B layer.

Node key ``(model_a, layer_a, model_b)``.  :func:`build`:

* picks B's layer: the best-matching one for ``layer_a`` by held-out matched
  correlation (``RUN/calibration/best.parquet``, readout ``matched-corr``);
* reads the aligned activations of both layers (every unit, or the seeded
  subsample of ``transfer.max_units``) and splits them with the run's held-out
  split (:func:`saematch.matching.stage.train_mask`: the units that paired the
  features fit the maps and probes, the others score them);
* the floor: the random-init control (``controls.random_init``) in A's place:
  its activations at A's layer when the random model is A, else at the layer of
  the random model nearest A's relative depth.  Ridge from the control gives the
  maps' floor R^2; B's SAE read through it gives the SAE-transfer floor (the
  ``transfer.floor_pct`` percentile of its per-feature correlations).  Without a
  random-init control no floor is claimed;
* steering prompts come from B's held-out text only (token runs that no
  training unit covers), with B's own prefix (BOS);
* calls :func:`saematch.transfer.stage.run_transfer` into ``node.path`` and writes
  the manifest last, with the chosen B layer, its score and the floor's source.

:func:`report_section` (the report node calls it) lives in :mod:`saematch.transfer.report`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def best_b_layer(ctx: Any, model_a: str, layer_a: int, model_b: str) -> tuple[int, float]:
    """B's layer with the highest held-out matched correlation to ``layer_a`` (and that score)."""
    path = ctx.layout.root / "calibration" / "best.parquet"
    best = ctx.memo(("transfer-best", str(path)), lambda: pd.read_parquet(path))
    row = best[(best["readout"] == "matched-corr") & (best["model_a"] == model_a) & (best["layer_a"] == layer_a)
               & (best["model_b"] == model_b)]
    if row.empty:
        raise SaematchError(f"{path} has no matched-corr row for {model_a} layer {layer_a} against {model_b}; "
                            "rerun the calibrate stage")
    return int(row["layer_b"].iloc[0]), float(row["score"].iloc[0])


def floor_source(ctx: Any, model_a: str, layer_a: int) -> Optional[tuple[str, int]]:
    """(store key, layer) of the random-init control standing in for A, or None when the run has none."""
    cfg = ctx.cfg
    ctl = cfg.controls
    if not ctl.random_init:
        return None
    key = ctl.random_model or cfg.models[0].key
    if key == model_a:
        return f"{key}@random", layer_a
    spec = ctx.spec(key)
    depth = (layer_a + 1) / ctx.n_layers(ctx.spec(model_a))
    n = ctx.n_layers(spec)
    return f"{key}@random", min(spec.layers, key=lambda L: (abs((L + 1) / n - depth), L))


def heldout_runs(token_ids: Sequence[np.ndarray], tok_U: np.ndarray, doc_U: np.ndarray,
                 train_U: np.ndarray, docs_out: Optional[list[int]] = None) -> list[np.ndarray]:
    """Maximal runs of each document's tokens that no training unit covers.

    A unit covers the tokens after the previous unit's last token up to its own
    (``tok_U``: index into its document's tokens); tokens after a document's last
    unit go with it.  Documents without units give no runs.
    """
    runs = []
    for d, ids in enumerate(token_ids):
        sel = np.flatnonzero(doc_U == d)
        if not len(sel) or not len(ids):
            continue
        order = np.argsort(tok_U[sel], kind="stable")
        toks, train = tok_U[sel][order], np.asarray(train_U, bool)[sel][order]
        owner = np.minimum(np.searchsorted(toks, np.arange(len(ids)), side="left"), len(toks) - 1)
        free = ~train[owner]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
        runs += [np.asarray(ids[s:e]) for s, e in zip(edges[::2], edges[1::2])]
        if docs_out is not None:
            docs_out += [d] * (len(edges) // 2)
    return runs


def _doc_ids(ctx: Any) -> list[str]:
    return pd.read_parquet(ctx.layout.corpus() / "docs.parquet", columns=["doc_id"])["doc_id"].astype(str).tolist()


def build(node: Any, ctx: Any, chash: str) -> None:
    """Build one transfer node (see the module docstring); manifest last."""
    from saematch.artifacts import Stage
    from saematch.matching.stage import train_mask
    from saematch.sae.load import load_sae_dir
    from saematch.similarity.semantic import load_concepts
    from saematch.transfer.stage import run_transfer, subsample
    from saematch.transfer.steering import heldout_prompts

    model_a, layer_a, model_b = node.key
    cfg, tc = ctx.cfg, ctx.cfg.transfer
    out = Path(node.path)
    Stage(out).invalidate()
    if out.exists():  # leftovers of an earlier or interrupted build: nothing stale may be queried
        shutil.rmtree(out)
    layer_b, score = best_b_layer(ctx, model_a, layer_a, model_b)
    log.info("transfer %s L%d -> %s: best-matching layer %d (held-out matched correlation %.3f)",
             model_a, layer_a, model_b, layer_b, score)
    units = ctx.corpus.units
    n = len(units)
    rows = subsample(n, tc.max_units, tc.seed)
    rows = np.arange(n) if rows is None else rows
    sa, sb = ctx.store(model_a, layer_a), ctx.store(model_b, layer_b)
    for key, s in ((model_a, sa), (model_b, sb)):
        if s.n_rows != n:
            raise SaematchError(f"activations of {key} have {s.n_rows} rows but the corpus has {n} units; "
                                "rerun extract")
    mask = train_mask(ctx)
    src = floor_source(ctx, model_a, layer_a)
    XR = ctx.store(*src).take(rows).numpy() if src is not None else None
    XE = None
    if getattr(cfg.controls, "embed", False):  # token identity: A's input embeddings entering block 0
        XE = ctx.store(f"{model_a}@embed", 0).take(rows).numpy()
    else:
        log.info("transfer %s L%d: controls.embed is off; the token-identity floor is not measured", model_a, layer_a)
    steer = bool(tc.steer_kinds)
    adapter = tokenizer = prompts = None
    if steer:
        spec_b = ctx.spec(model_b)
        adapter, tokenizer = ctx.model(spec_b), ctx.tokenizer(spec_b)
        run_docs: list[int] = []
        runs = heldout_runs(ctx.corpus.token_ids(model_b), units[f"tok_{model_b}"].to_numpy(),
                            units["doc"].to_numpy(), mask, run_docs)
        prompts, prompt_runs = heldout_prompts(runs, ctx.corpus.prefix(model_b), tc.n_prompts, tc.prompt_tokens,
                                               tc.seed, return_runs=True)
        prompt_docs = np.asarray(run_docs)[prompt_runs]
    pairs = pd.read_parquet(ctx.layout.pairs(model_a, layer_a, model_b, layer_b) / "pairs.parquet")
    pairs = pairs[pairs["keep"] & (pairs["corr_train"] > 0)].reset_index(drop=True)
    res = run_transfer(
        sa.take(rows).numpy(), sb.take(rows).numpy(),
        units.iloc[rows][["doc", "char_start", "char_end", "text"]].reset_index(drop=True), tc, out,
        model_a=model_a, layer_a=layer_a, model_b=model_b, layer_b=layer_b,
        texts=ctx.corpus.texts, doc_ids=_doc_ids(ctx), concepts=load_concepts(cfg.similarity.concepts),
        adapter_b=adapter, tokenizer_b=tokenizer, prompts_b=prompts,
        sae_a=load_sae_dir(ctx.layout.sae(model_a, layer_a)), sae_b=load_sae_dir(ctx.layout.sae(model_b, layer_b)),
        pairs=pairs, X_floor=XR, X_embed=XE, prompt_groups=prompt_docs if steer else None, train_mask=mask[rows],
    )
    summary = {"r2": res.r2, "r2_floor": res.r2_floor, "r2_embed": res.r2_embed, "steering_success": res.steering_success,
               "probe_bacc_transfer": res.probe_bacc_transfer,
               "sae_frac_above_floor": (res.sae or {}).get("frac_above_floor")}
    Stage(out).finish(chash, [out / f for f in res.files], layer_b=layer_b, best_score=score,
                      floor=("random-init", *src) if src else None, n_units=int(len(rows)),
                      n_train=res.n_train, n_test=res.n_test,
                      n_prompts=None if prompts is None else int(prompts.shape[0]), summary=summary)


def report_section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    """The report's transfer section: (title, self-contained HTML, figures written into ``out``)."""
    from saematch.transfer.report import report_section as section

    return section(ctx, out)
