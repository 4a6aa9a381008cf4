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
