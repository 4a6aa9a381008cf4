"""Stage functions and the config-hash chain that makes each stage a cache.

Each stage's hash covers its own config section and the hashes of the stages it
reads, so changing the corpus invalidates everything after it and nothing
before.  A stage is skipped when its manifest exists with the same hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from saematch.artifacts import RunLayout, Stage, check_writable
from saematch.config import ModelSpec, RunConfig
from saematch.configio import config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hashes:
    """Config hashes of every stage artifact of a run."""

    cfg: RunConfig

    @property
    def corpus(self) -> str:
        return config_hash(self.cfg.corpus, [(m.key, m.name, m.revision) for m in self.cfg.models])

    def acts(self, spec: ModelSpec) -> str:
        e = self.cfg.extract
        return config_hash(self.corpus, spec.name, spec.revision, e.dtype, e.store_dtype, e.shard_units)

    def sae(self, spec: ModelSpec, layer: int) -> str:
        if spec.pretrained:
            return config_hash(self.acts(spec), layer, spec.sae_release, spec.sae_id, spec.sae_path)
        s = self.cfg.sae
        train = {k: v for k, v in vars(s).items() if k not in {"threads", "checkpoint_every", "loss_windows"}}
        return config_hash(self.acts(spec), layer, train)

    def features(self, spec: ModelSpec, layer: int) -> str:
        m = self.cfg.matching
        return config_hash(self.sae(spec, layer), m.top_contexts, m.context_chars, self.cfg.sae.dense_threshold)

    def pairs(self, a: ModelSpec, la: int, b: ModelSpec, lb: int) -> str:
        return config_hash(self.features(a, la), self.features(b, lb), self.cfg.matching)


def model_pairs(cfg: RunConfig) -> list[tuple[ModelSpec, ModelSpec]]:
    """Every pair of models (A before B in config order)."""
    ms = cfg.models
    return [(ms[i], ms[j]) for i in range(len(ms)) for j in range(i + 1, len(ms))]


def layer_pairs(cfg: RunConfig, a: ModelSpec, b: ModelSpec) -> list[tuple[int, int]]:
    from saematch.errors import ConfigError

    if cfg.matching.layer_pairs == "all":
        return [(la, lb) for la in a.layers for lb in b.layers]
    pairs = [tuple(p) for p in cfg.matching.layer_pairs]
    for la, lb in pairs:
        if la not in a.layers or lb not in b.layers:
            raise ConfigError(f"matching.layer_pairs: [{la}, {lb}] is not among the configured layers of "
                              f"'{a.key}' {list(a.layers)} and '{b.key}' {list(b.layers)}")
    return pairs


def layout(cfg: RunConfig) -> RunLayout:
    return RunLayout(Path(cfg.run_dir))


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def run_corpus(cfg: RunConfig, force: bool = False) -> Stage:
    """Stage 1: documents, tokens, aligned units."""
    from saematch.adapter import load_tokenizer
    from saematch.corpus import build_corpus, iter_documents

    lay = layout(cfg)
    check_writable(lay.root)
    stage = Stage(lay.corpus())
    h = Hashes(cfg).corpus
    if not force and stage.is_complete(h):
        log.info("corpus: up to date (%s)", stage.root)
        return stage
    toks = {
        m.key: load_tokenizer(m.name, cfg.cache_path, m.trust_remote_code, m.revision) for m in cfg.models
    }
    build_corpus(cfg.corpus, iter_documents(cfg.corpus), toks, stage.root, h)
    return stage


def run_extract(cfg: RunConfig, force: bool = False) -> list:
    """Stage 2: residual activations of every model at its layers."""
    from saematch.activations import DistInfo, extract_model
    from saematch.adapter import load_model
    from saematch.corpus import Corpus

    from saematch.adapter import n_layers_of
    from saematch.errors import SaematchError

    for spec in cfg.models:  # fail before touching any artifact
        n = n_layers_of(spec.name, cfg.cache_path, spec.trust_remote_code, spec.revision)
        bad = [la for la in spec.layers if la >= n]
        if bad:
            raise SaematchError(f"layer {bad[0]} is out of range for model '{spec.name}', which has {n} blocks "
                                f"(valid layers: 0..{n - 1})")
    run_corpus(cfg)
    set_threads(cfg.extract.threads)
    lay = layout(cfg)
    corpus = Corpus(lay.corpus())
    hashes = Hashes(cfg)
    dist = DistInfo.from_env()
    device = cfg.extract.device
    if device == "cuda" and dist.world > 1:
        import os

        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    results = []
    for spec in cfg.models:
        if force:
            for layer in spec.layers:
                Stage(lay.acts(spec.key, layer)).invalidate()

        def load(spec: ModelSpec = spec):
            return load_model(spec.name, cfg.cache_path, cfg.extract.dtype, device, spec.trust_remote_code, spec.revision)

        res = extract_model(corpus, spec, load, cfg.extract, lay, hashes.acts(spec), dist)
        log.info("extract %s: %d rows, %d shards written, %d reused", spec.key, res.n_rows, res.shards_written, res.shards_skipped)
        results.append(res)
    return results


def _adapter_loader(cfg: RunConfig, spec: ModelSpec):
    """A memoised loader, so a model is loaded at most once and only when needed."""
    from saematch.adapter import load_model

    cache: dict = {}

    def get():
        if "m" not in cache:
            cache["m"] = load_model(spec.name, cfg.cache_path, cfg.extract.dtype, cfg.extract.device,
                                    spec.trust_remote_code, spec.revision)
        return cache["m"]

    return get


def run_sae(cfg: RunConfig, force: bool = False, logger=None, evaluate_only: bool = False,
            only: tuple[str, int] | None = None) -> dict:
    """Stage 3: train (or load) one SAE per (model, layer) and write its eval.json.

    ``only=(model_key, layer)`` restricts the work to one SAE (one job per GPU).
    """
    from saematch.activations import open_layer
    from saematch.corpus import Corpus
    from saematch.logger import NullLogger
    from saematch.sae.evaluate import LossProbe, SAEEval
    from saematch.sae.load import load_sae_dir
    from saematch.sae.stage import evaluate_sae, loss_batch, sae_for_layer
    from saematch.artifacts import read_json, write_json

    logger = logger or NullLogger()
    if not evaluate_only:
        run_extract(cfg)
    set_threads(cfg.sae.threads)
    lay, hashes = layout(cfg), Hashes(cfg)
    corpus = Corpus(lay.corpus())
    evals: dict = {}
    for spec in cfg.models:
        ids = loss_batch(corpus, spec.key, cfg.sae.loss_windows)
        probe = LossProbe(_adapter_loader(cfg, spec), ids, len(corpus.prefix(spec.key))) if ids is not None else None
        for layer in spec.layers:
            if only is not None and (spec.key, layer) != only:
                continue
            out, h = lay.sae(spec.key, layer), hashes.sae(spec, layer)
            stage = Stage(out)
            store = open_layer(lay.acts(spec.key, layer))
            if evaluate_only:
                man = stage.manifest()
                ev = evaluate_sae(load_sae_dir(out), store, cfg.sae, layer, probe, man.get("scale"))
                write_json(out / "eval.json", ev.to_dict())
                stage.finish(man["config_hash"], [out / "cfg.json", out / "sae_weights.safetensors", out / "eval.json"],
                             **{k: v for k, v in man.items() if k not in {"config_hash", "files"}})
            elif force or not stage.is_complete(h):
                ev = sae_for_layer(spec, layer, store, cfg.sae, out, h, probe, logger)
            else:
                ev = SAEEval(**read_json(out / "eval.json"))
            evals[(spec.key, layer)] = ev
    return evals


def run_features(cfg: RunConfig, force: bool = False) -> None:
    """Sparse SAE activations and feature cards for every (model, layer)."""
    from saematch.activations import open_layer
    from saematch.corpus import Corpus
    from saematch.features import encode_sparse, save_csr
    from saematch.matching.cards import feature_cards
    from saematch.matching.store import write_parquet
    from saematch.sae import load_sae_dir

    lay, hashes = layout(cfg), Hashes(cfg)
    corpus = Corpus(lay.corpus())
    for spec in cfg.models:
        for layer in spec.layers:
            out, h = lay.features(spec.key, layer), hashes.features(spec, layer)
            stage = Stage(out)
            if not force and stage.is_complete(h):
                continue
            sae = load_sae_dir(lay.sae(spec.key, layer))
            k = getattr(sae.cfg, "k", None) or 64
            X = encode_sparse(sae, open_layer(lay.acts(spec.key, layer)), cfg.matching.encode_batch, max_active=k)
            cards = feature_cards(X, corpus.units, corpus.texts, cfg.matching.top_contexts, cfg.matching.context_chars,
                                  cfg.sae.dense_threshold, spec.key, layer)
            stage.invalidate()
            write_parquet(cards, out / "cards.parquet")
            save_csr(out, X)
            stage.finish(h, [out / "acts.safetensors", out / "cards.parquet"], n_units=X.shape[0], d_sae=X.shape[1],
                         nnz=int(X.nnz), dead=int(cards["dead"].sum()), dense=int(cards["dense"].sum()))


def run_match(cfg: RunConfig, force: bool = False) -> dict:
    """Stage 4: correlate and pair features for every configured layer pair."""
    import pandas as pd

    from saematch.features import load_csr
    from saematch.matching.stage import info_dict, match_pair
    from saematch.matching.store import write_parquet

    run_sae(cfg)
    run_features(cfg)
    lay, hashes = layout(cfg), Hashes(cfg)
    infos = {}
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            out, h = lay.pairs(a.key, la, b.key, lb), hashes.pairs(a, la, b, lb)
            stage = Stage(out)
            if not force and stage.is_complete(h):
                infos[(a.key, la, b.key, lb)] = stage.manifest()["info"]
                continue
            stage.invalidate()
            fa, fb = lay.features(a.key, la), lay.features(b.key, lb)
            df, info = match_pair(load_csr(fa), load_csr(fb), pd.read_parquet(fa / "cards.parquet"),
                                  pd.read_parquet(fb / "cards.parquet"), cfg.matching)
            write_parquet(df, out / "pairs.parquet")
            stage.finish(h, [out / "pairs.parquet"], info=info_dict(info))
            log.info("match %s L%d ~ %s L%d: %d pairs (%d kept), mean corr %.3f, solver %s, gap %.2g",
                     a.key, la, b.key, lb, info.n_pairs, info.n_kept, info.mean_corr_kept, info.solver, info.gap)
            infos[(a.key, la, b.key, lb)] = info_dict(info)
    return infos

