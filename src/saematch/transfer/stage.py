"""One transfer node: a model pair at one layer pair, from in-memory activations of matched units.

``run_transfer`` writes into ``out``::

    maps/<kind>_a2b.{safetensors,json}, maps/<kind>_b2a.{...}   fitted maps
    maps.parquet        direction, map, r2/cosine on test (and train), alpha, MLP's best epoch, fit seconds,
                        r2_floor/cosine_floor (ridge with the control in A's place; NaN without one)
    sae.parquet         B's SAE on mapped A, one row per A -> B map       (when sae_b is given)
    sae_features.parquet  per-feature correlation through the steer map (+ corr_floor)  (when sae_b is given)
    steering.parquet    kind, concept, scale, native/mapped/random effects (when adapter_b is given)
    probes.parquet      task, map, probe accuracies                        (when tasks are set)
    result.json         :class:`TransferResult`
    manifest.json       written last, when a config hash is passed

Every table carries ``model_a, layer_a, model_b, layer_b``.  The train/test
split is the caller's ``train_mask`` (the pipeline passes the run's held-out
split), else whole documents (``units['doc']``) held out, seeded, so
neighbouring units never straddle it; every score is on the held-out units.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from saematch.artifacts import Stage, atomic_path, write_json
from saematch.errors import SaematchError
from saematch.transfer.config import TransferConfig
from saematch.transfer.labels import DOC_TASKS, concept_context_mask, task_labels, unit_labels
from saematch.transfer.maps import BaseMap, RidgeCVMap, WhitenedProcrustesMap, check_pair
from saematch.transfer.mlp import MLPMap
from saematch.transfer.persist import save_map
from saematch.transfer.probes import check_labels, probe_transfer
from saematch.transfer.sae_on_mapped import sae_transfer
from saematch.transfer.steering import (
    concept_token_ids,
    diff_of_means,
    selective_features,
    steering_transfer,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferResult:
    """Headline numbers of one transfer node (the tables hold the rest)."""

    model_a: str
    layer_a: int
    model_b: str
    layer_b: int
    n_train: int  # units the maps and probes were fitted on
    n_test: int  # held-out units every score is computed on
    r2: dict[str, float]  # '<map>_a2b' / '<map>_b2a' -> held-out variance-weighted R^2
    cosine: dict[str, float]  # same keys -> held-out mean cosine
    ridge_alpha_rel: dict[str, float]  # 'a2b' / 'b2a' -> chosen alpha (relative grid value)
    sae: Optional[dict[str, Any]]  # SAETransferResult of the steer map, or None
    steering_success: Optional[float]  # fraction of (kind, concept, scale) rows where mapped beats every random
    probe_bacc_transfer: Optional[dict[str, float]]  # task -> balanced accuracy through the ridge map
    files: list[str] = field(default_factory=list)  # written files, relative to out
    floor_kind: str = "none"  # 'random-init' (control activations given), 'given' (a number passed) or 'none'
    r2_floor: Optional[dict[str, float]] = None  # 'a2b' / 'b2a' -> held-out R^2 of ridge with the control in A's place
    r2_embed: Optional[dict[str, float]] = None  # same, with A's input embeddings (token identity) in A's place


def split_units(units: pd.DataFrame, n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices; whole documents held out when there are at least 3."""
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    docs = units["doc"].to_numpy() if "doc" in units else None
    if docs is not None and len(np.unique(docs)) >= 3:
        split = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        tr, te = next(split.split(np.zeros(n), groups=docs))
    else:
        tr, te = next(ShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed).split(np.zeros(n)))
    return np.sort(tr), np.sort(te)


def subsample(n: int, max_units: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted seeded row indices when ``n`` exceeds ``max_units``; None keeps every row."""
    if max_units is None or n <= max_units:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_units, replace=False))


def _floor_scores(fm: Optional[RidgeCVMap], direction: str, XR: Optional[np.ndarray], XB: np.ndarray,
                  te: np.ndarray) -> dict[str, float]:
    """Held-out R^2 and cosine of the control's ridge map in this direction (NaN without one)."""
    if fm is None or XR is None:
        return {"r2_floor": np.nan, "cosine_floor": np.nan}
    X, Y = (XR[te], XB[te]) if direction == "a2b" else (XB[te], XR[te])
    return {"r2_floor": fm.score(X, Y), "cosine_floor": fm.cosine(X, Y)}


def fit_maps(X: np.ndarray, Y: np.ndarray, groups: Optional[np.ndarray], cfg: TransferConfig) -> dict[str, tuple[BaseMap, float]]:
    """Fit every configured map X -> Y; value is (map, seconds)."""
    out: dict[str, tuple[BaseMap, float]] = {}
    t = time.perf_counter()
    ridge = RidgeCVMap(cfg.alphas, cfg.cv_folds, cfg.seed).fit(X, Y, groups=groups)
    out["ridge"] = (ridge, time.perf_counter() - t)
    if "procrustes" in cfg.maps:
        t = time.perf_counter()
        out["procrustes"] = (WhitenedProcrustesMap(cfg.whiten_eps).fit(X, Y), time.perf_counter() - t)
    if "mlp" in cfg.maps:
        t = time.perf_counter()
        mlp = MLPMap(cfg.mlp_hidden, cfg.mlp_epochs, cfg.mlp_patience, cfg.mlp_lr, cfg.mlp_weight_decay,
                     cfg.mlp_batch, cfg.mlp_val_fraction, cfg.seed)
        out["mlp"] = (mlp.fit(X, Y, init_alpha=ridge.alpha_), time.perf_counter() - t)
    return out


def _write_parquet(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def run_transfer(
    XA: np.ndarray | torch.Tensor, XB: np.ndarray | torch.Tensor, units: pd.DataFrame, cfg: TransferConfig, out: Path,
    *, model_a: str, layer_a: int, model_b: str, layer_b: int,
    texts: Optional[list[str]] = None, doc_ids: Optional[list[str]] = None,
    concepts: Optional[dict[str, set[str]]] = None,
    adapter_b: Any = None, tokenizer_b: Any = None, prompts_b: Optional[torch.Tensor] = None,
    sae_a: Any = None, sae_b: Any = None, pairs: Optional[pd.DataFrame] = None,
    floor: Optional[float] = None, X_floor: Optional[np.ndarray | torch.Tensor] = None,
    X_embed: Optional[np.ndarray | torch.Tensor] = None, prompt_groups: Optional[np.ndarray] = None,
    train_mask: Optional[np.ndarray] = None, config_hash: Optional[str] = None,
) -> TransferResult:
    """Maps A <-> B, then SAE, steering and probe transfer through them; write tables into ``out``.

    ``XA``/``XB`` hold the same units (rows of ``units``: doc, char_start, text).
    Probe labels need ``texts``/``doc_ids`` (indexed by ``units['doc']``);
    steering needs ``adapter_b``, ``tokenizer_b``, held-out ``prompts_b`` and
    ``concepts``; the feature kind also needs ``sae_a``, ``sae_b`` and ``pairs``
    (feature_a, feature_b); SAE transfer needs ``sae_b``.  What is missing is skipped.

    ``X_floor``: a control's activations on the same units in A's place (the
    random-init network): ridge is fitted from it as from A, giving the maps'
    floor R^2, and B's SAE read through that map gives the SAE-transfer floor,
    percentile ``cfg.floor_pct`` of its per-feature correlations (unless a
    ``floor`` number is passed).  ``X_embed``: A's input embeddings on the same
    units (token identity): ridge from it gives the token-identity R^2 beside A's,
    and steering and probes are rerun through both controls as floors.
    ``prompt_groups``: each steering prompt's document, for grouped CIs.  ``train_mask`` (bool per unit): the run's split,
    True = fit, False = score; default: whole documents held out by ``cfg.test_fraction``.
    """
    XA_, XB_ = check_pair(np.asarray(XA, np.float64), np.asarray(XB, np.float64), min_n=20)
    if len(units) != XA_.shape[0]:
        raise SaematchError(f"units table has {len(units)} rows but the activations have {XA_.shape[0]}")
    XR_ = None if X_floor is None else check_pair(np.asarray(X_floor, np.float64), XB_, min_n=20)[0]
    XE_ = None if X_embed is None else check_pair(np.asarray(X_embed, np.float64), XB_, min_n=20)[0]
    mask = None if train_mask is None else np.asarray(train_mask, bool)
    if mask is not None and mask.shape != (len(units),):
        raise SaematchError(f"train_mask has shape {mask.shape} but there are {len(units)} units")
    units = units.reset_index(drop=True)
    keep = subsample(len(units), cfg.max_units, cfg.seed)
    if keep is not None:
        XA_, XB_, units = XA_[keep], XB_[keep], units.iloc[keep].reset_index(drop=True)
        XR_ = None if XR_ is None else XR_[keep]
        XE_ = None if XE_ is None else XE_[keep]
        mask = None if mask is None else mask[keep]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config_hash is not None:
        Stage(out).invalidate()
    if mask is not None:
        tr, te = np.flatnonzero(mask), np.flatnonzero(~mask)
        if min(len(tr), len(te)) < 2 * cfg.cv_folds:
            raise SaematchError(f"the split leaves {len(tr)} training and {len(te)} held-out units; "
                                f"transfer needs at least {2 * cfg.cv_folds} of each")
    else:
        tr, te = split_units(units, len(units), cfg.test_fraction, cfg.seed)
    labels = {"model_a": model_a, "layer_a": layer_a, "model_b": model_b, "layer_b": layer_b}
    groups = units["doc"].to_numpy()[tr] if "doc" in units else None
    task_data = _task_data(units, texts, doc_ids, cfg.tasks, tr, te)  # fail fast, before any fitting
    files: list[Path] = []

    floor_maps: dict[str, RidgeCVMap] = {}
    if XR_ is not None:  # the control in A's place, through the same ridge recipe
        for direction, (X, Y) in {"a2b": (XR_, XB_), "b2a": (XB_, XR_)}.items():
            fm = floor_maps[direction] = RidgeCVMap(cfg.alphas, cfg.cv_folds, cfg.seed).fit(X[tr], Y[tr], groups=groups)
            log.info("transfer floor %s: ridge R2 %.3f", direction, fm.score(X[te], Y[te]))
    embed_maps: dict[str, RidgeCVMap] = {}
    if XE_ is not None:  # token identity in A's place: what any network that sees the word could carry
        for direction, (X, Y) in {"a2b": (XE_, XB_), "b2a": (XB_, XE_)}.items():
            em = embed_maps[direction] = RidgeCVMap(cfg.alphas, cfg.cv_folds, cfg.seed).fit(X[tr], Y[tr], groups=groups)
            log.info("transfer token-identity floor %s: ridge R2 %.3f", direction, em.score(X[te], Y[te]))
    else:
        log.info("transfer: no @embed control in this run; the token-identity floor is not measured")
    maps: dict[str, dict[str, BaseMap]] = {}
    rows = []
    for direction, (X, Y) in {"a2b": (XA_, XB_), "b2a": (XB_, XA_)}.items():
        maps[direction] = {}
        for kind, (m, secs) in fit_maps(X[tr], Y[tr], groups, cfg).items():
            maps[direction][kind] = m
            files += save_map(m, out / "maps" / f"{kind}_{direction}", direction=direction,
                              model_a=model_a, layer_a=layer_a, model_b=model_b, layer_b=layer_b)
            rows.append({"direction": direction, "map": kind, "r2": m.score(X[te], Y[te]), "cosine": m.cosine(X[te], Y[te]),
                         "r2_train": m.score(X[tr], Y[tr]), "alpha": getattr(m, "alpha_", np.nan),
                         "alpha_rel": getattr(m, "alpha_rel_", np.nan), "best_epoch": getattr(m, "best_epoch_", np.nan),
                         "fit_s": secs, **_floor_scores(
                             floor_maps.get(direction) if kind == "ridge" else None, direction, XR_, XB_, te),
                         **{f"{k}_embed": v for k, v in _floor_scores(
                             embed_maps.get(direction) if kind == "ridge" else None, direction, XE_, XB_, te).items()}})
            log.info("transfer %s L%d -> %s L%d: %s %s R2 %.3f", model_a, layer_a, model_b, layer_b, kind, direction, rows[-1]["r2"])
    map_table = pd.DataFrame(rows).assign(**labels)
    files.append(_write_parquet(out / "maps.parquet", map_table))

    sae_summary = None
    floor_kind = "given" if floor is not None else "random-init" if XR_ is not None else "none"
    if sae_b is not None:
        corr_floor = None
        if floor is None and XR_ is not None:
            _, ftab = sae_transfer(sae_b, floor_maps["a2b"].transform(XR_[te]), XB_[te], batch=cfg.sae_batch)
            corr_floor = ftab["corr"].to_numpy()
            alive = ~np.isnan(corr_floor)
            floor = float(np.percentile(corr_floor[alive], cfg.floor_pct)) if alive.any() else None
        sae_rows = []
        for kind, m in maps["a2b"].items():
            res, feats = sae_transfer(sae_b, m.transform(XA_[te]), XB_[te], floor=floor, batch=cfg.sae_batch)
            sae_rows.append({"map": kind, **res.to_dict(), "floor_kind": floor_kind,
                             "median_corr_floor": np.nan if corr_floor is None else float(np.nanmedian(corr_floor))})
            if kind == cfg.steer_map:
                sae_summary = res.to_dict()
                if corr_floor is not None:
                    feats["corr_floor"] = corr_floor
                files.append(_write_parquet(out / "sae_features.parquet", feats.assign(**labels)))
        files.append(_write_parquet(out / "sae.parquet", pd.DataFrame(sae_rows).assign(**labels)))

    steering_success = None
    if adapter_b is not None and tokenizer_b is not None and prompts_b is not None and concepts:
        ctl = {name: (X[tr], m["a2b"]) for name, X, m in (("random_init", XR_, floor_maps), ("embed", XE_, embed_maps))
               if X is not None}
        table = _steering(XA_[tr], XB_[tr], units.iloc[tr], maps["a2b"][cfg.steer_map], cfg, concepts,
                          adapter_b, tokenizer_b, prompts_b, layer_b, sae_a, sae_b, pairs, ctl, prompt_groups)
        files.append(_write_parquet(out / "steering.parquet", table.assign(**labels)))
        steering_success = float(table["success"].mean()) if len(table) else None

    probe_summary = None
    if task_data:
        XB_te_in_A = {kind: m.transform(XB_[te]) for kind, m in maps["b2a"].items()}
        docs = units["doc"].to_numpy()
        prow = []
        for task, (y, known) in task_data.items():
            k_tr, k_te = known[tr], known[te]
            rows_t = probe_transfer(XA_[tr][k_tr], XB_[tr][k_tr], y[tr][k_tr], XA_[te][k_te], XB_[te][k_te], y[te][k_te],
                                    {kind: X[k_te] for kind, X in XB_te_in_A.items()}, task,
                                    cfg.probe_C, cfg.probe_max_iter, cfg.seed, groups_te=docs[te][k_te],
                                    floors={n: (X[tr][k_tr], X[te][k_te]) for n, X in
                                            (("random_init", XR_), ("embed", XE_)) if X is not None})
            prow += [{**r, "label_level": "document" if task in DOC_TASKS else "unit"} for r in rows_t]
        ptable = pd.DataFrame(prow).assign(**labels)
        files.append(_write_parquet(out / "probes.parquet", ptable))
        probe_summary = {r["task"]: r["bacc_transfer"] for r in prow if r["map"] == "ridge"}

    result = TransferResult(
        model_a, layer_a, model_b, layer_b, len(tr), len(te),
        r2={f"{r['map']}_{r['direction']}": float(r["r2"]) for r in rows},
        cosine={f"{r['map']}_{r['direction']}": float(r["cosine"]) for r in rows},
        ridge_alpha_rel={d: float(maps[d]["ridge"].alpha_rel_) for d in maps},  # type: ignore[attr-defined]
        sae=sae_summary, steering_success=steering_success, probe_bacc_transfer=probe_summary,
        files=[str(f.relative_to(out)) for f in files] + ["result.json"], floor_kind=floor_kind,
        r2_floor={d: float(fm.score(*((XR_[te], XB_[te]) if d == "a2b" else (XB_[te], XR_[te]))))
                  for d, fm in floor_maps.items()} or None,
        r2_embed={d: float(em.score(*((XE_[te], XB_[te]) if d == "a2b" else (XB_[te], XE_[te]))))
                  for d, em in embed_maps.items()} or None,
    )
    write_json(out / "result.json", asdict(result))
    if config_hash is not None:
        Stage(out).finish(config_hash, files + [out / "result.json"], kind="transfer")
    return result


def _task_data(
    units: pd.DataFrame, texts: Optional[list[str]], doc_ids: Optional[list[str]], tasks: tuple[str, ...],
    tr: np.ndarray, te: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels per task, checked to have both classes in the training and held-out units."""
    if not tasks or texts is None or doc_ids is None:
        return {}
    labels = unit_labels(units, texts, doc_ids)
    out = {}
    for task in tasks:
        y, known = task_labels(labels, task)
        check_labels(y[tr][known[tr]], task, "training")
        check_labels(y[te][known[te]], task, "held-out")
        out[task] = (y, known)
    return out


def _steering(
    XA: np.ndarray, XB: np.ndarray, units: pd.DataFrame, m: BaseMap, cfg: TransferConfig,
    concepts: dict[str, set[str]], adapter_b: Any, tokenizer_b: Any, prompts_b: torch.Tensor, layer_b: int,
    sae_a: Any, sae_b: Any, pairs: Optional[pd.DataFrame],
    controls: Optional[dict[str, tuple[np.ndarray, BaseMap]]] = None, prompt_groups: Optional[np.ndarray] = None,
) -> pd.DataFrame:
    """Build native and mapped vectors per concept (training units only) and run them through B.

    Floors per vector: ``wrong_concept`` (the same kind's mapped vector of the next concept) and, for
    difference-of-means vectors, each control's (``controls[name] = (X_train, its map into B)``) own
    difference of means carried by its own map.
    """
    names, masks = [], []
    for name, kw in concepts.items():
        mask = concept_context_mask(units, kw, cfg.context_units)
        if min(mask.sum(), (~mask).sum()) < cfg.min_concept_units:
            log.warning("concept '%s' has %d of %d training units in context; skipped", name, mask.sum(), len(mask))
            continue
        names.append(name)
        masks.append(mask)
    vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    meta: dict[tuple[str, str], dict] = {}
    if "diffmean" in cfg.steer_kinds:
        for name, mask in zip(names, masks):
            vectors[("diffmean", name)] = (diff_of_means(XB, mask), m.map_directions(diff_of_means(XA, mask)[None])[0])
    if "feature" in cfg.steer_kinds and sae_a is not None and sae_b is not None and pairs is not None and len(pairs) \
            and names:
        fa, fb = pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy()
        best = selective_features(sae_a, XA, np.stack(masks), fa, cfg.sae_batch)
        dec_a = sae_a.W_dec.detach().double().cpu().numpy()
        dec_b = sae_b.W_dec.detach().double().cpu().numpy()
        for name, j in zip(names, best):
            vectors[("feature", name)] = (dec_b[fb[j]], m.map_directions(dec_a[fa[j]][None])[0])
            meta[("feature", name)] = {"feature_a": int(fa[j]), "feature_b": int(fb[j])}
    floors: dict[tuple[str, str], dict[str, np.ndarray]] = {k: {} for k in vectors}
    for kind in {k for k, _ in vectors}:
        own = [c for k, c in vectors if k == kind]
        for i, c in enumerate(own):
            if len(own) > 1:
                floors[(kind, c)]["wrong_concept"] = vectors[(kind, own[(i + 1) % len(own)])][1]
    for ctl, (XC, mc) in (controls or {}).items():
        for name, mask in zip(names, masks):
            if ("diffmean", name) in vectors:
                floors[("diffmean", name)][ctl] = mc.map_directions(diff_of_means(XC, mask)[None])[0]
    tokens = {name: concept_token_ids(tokenizer_b, concepts[name]) for name in names}
    ref_norm = float(np.linalg.norm(XB, axis=1).mean())
    return steering_transfer(adapter_b, prompts_b, layer_b, vectors, tokens, ref_norm, cfg.steering_scales,
                             cfg.n_random, cfg.eval_positions, cfg.steer_batch, cfg.seed, meta, XB_cov=XB,
                             floors=floors, prompt_groups=prompt_groups)
