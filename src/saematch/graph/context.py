"""The run context: what is expensive to open, opened once per run and shared by the nodes."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from saematch.artifacts import RunLayout
from saematch.config import ModelSpec, RunConfig
from saematch.logger import Logger, NullLogger

log = logging.getLogger(__name__)


class RunContext:
    """Config, layout and logger of a run, with memoised models, tokenizers, corpus and stores.

    A model is loaded at most once per run (and only when a node needs it); a
    store is opened once, after its node's manifest was checked by the executor.
    """

    def __init__(self, cfg: RunConfig, logger: Optional[Logger] = None):
        self.cfg = cfg
        self.layout = RunLayout(Path(cfg.run_dir))
        self.logger = logger or NullLogger()
        self._models: dict[str, Any] = {}
        self._stores: dict[tuple[str, int], Any] = {}
        self._n_layers: dict[str, int] = {}
        self._memo: dict[Any, Any] = {}

    def spec(self, key: str) -> ModelSpec:
        """The configured model behind a key (a control variant ``MODEL@...`` gives its source)."""
        from saematch.graph.plan import variant

        src = variant(key).source
        return next(m for m in self.cfg.models if m.key == src)

    def n_layers(self, spec: ModelSpec) -> int:
        """Blocks in the model, from its config alone (no weights)."""
        if spec.key not in self._n_layers:
            from saematch.adapter import n_layers_of

            self._n_layers[spec.key] = n_layers_of(spec.name, self.cfg.cache_path, spec.trust_remote_code, spec.revision)
        return self._n_layers[spec.key]

    def model(self, spec: ModelSpec, device: Optional[str] = None, random_init: bool = False) -> Any:
        """The model's adapter, loaded once per device (``random_init``: its architecture with seeded random
        weights); ``device`` defaults to the extract stage's."""
        from saematch.devices import stage_device

        dev = device or stage_device(self.cfg, "extract")
        key = (spec.key, random_init, dev)
        if key not in self._models:
            from saematch.adapter import load_model, load_random_init

            if random_init:
                self._models[key] = load_random_init(spec.name, self.cfg.cache_path, self.cfg.controls.random_seed,
                                                     self.cfg.extract.dtype, dev, spec.trust_remote_code, spec.revision)
            else:
                self._models[key] = load_model(spec.name, self.cfg.cache_path, self.cfg.extract.dtype, dev,
                                               spec.trust_remote_code, spec.revision)
        return self._models[key]

    def tokenizer(self, spec: ModelSpec) -> Any:
        from saematch.adapter import load_tokenizer

        return load_tokenizer(spec.name, self.cfg.cache_path, spec.trust_remote_code, spec.revision)

    @cached_property
    def corpus(self) -> Any:
        from saematch.corpus import Corpus

        return Corpus(self.layout.corpus())

    @cached_property
    def split(self) -> Any:
        """The run's document split (:class:`saematch.corpus.split.DocSplit`), read once."""
        from saematch.corpus.split import read_split

        return read_split(self.layout.split(), self.corpus.units["doc"].to_numpy())

    def forget_stores(self, model: str) -> None:
        """Drop opened stores of ``model`` (its extract node is being rebuilt)."""
        for k in [k for k in self._stores if k[0] == model]:
            del self._stores[k]

    def memo(self, key: Any, make: Any) -> Any:
        """``make()`` once per run for ``key`` (loss probes, loaded tables)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def store(self, model: str, layer: int) -> Any:
        """An activation store, opened once (the executor has checked its manifest); a twin or shuffle
        variant reads its source model's activations."""
        from saematch.graph.plan import variant

        model = variant(model).acts
        if (model, layer) not in self._stores:
            from saematch.activations import open_layer

            self._stores[model, layer] = open_layer(self.layout.acts(model, layer), verify=False)
        return self._stores[model, layer]
