"""The plan: every artifact of a run as a node, declared from a :class:`RunConfig`.

A node names its stage, its key (model, layer, layer pair ...), the slice of
config it hashes, the nodes it reads, its directory and the function that
builds it (``module:function``, imported only when the node is built, so
planning and ``saematch status`` import no model code).  A node's hash covers
its stage, key, config slice and the hashes of its dependencies, so a change
invalidates exactly the nodes downstream of it.  This module is the only place
that knows the order of the stages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from saematch.artifacts import RunLayout
from saematch.config import ModelSpec, RunConfig
from saematch.configio import config_hash
from saematch.errors import ConfigError

STAGES = ("corpus", "extract", "train", "features", "match", "compare", "report")


@dataclass(frozen=True)
class Node:
    """One artifact of the run.

    stage: one of :data:`STAGES`; key: what distinguishes it within its stage;
    path: its directory; params: the config slice it hashes; deps: ids of the
    nodes it reads; builder: ``module:function(node, ctx, config_hash)``;
    parts: directories whose manifests together make the node (default: path).
    """

    stage: str
    key: tuple
    path: Path
    params: Any
    deps: tuple[str, ...]
    builder: str
    parts: tuple[Path, ...] = ()
    preflight: str = ""

    @property
    def id(self) -> str:
        return ":".join([self.stage, *map(str, self.key)])

    @property
    def manifest_dirs(self) -> tuple[Path, ...]:
        return self.parts or (self.path,)

    def matches(self, model: str, layer: int) -> bool:
        """Does ``--only MODEL:LAYER`` select this node?"""
        k = self.key
        if self.stage == "extract":
            return k[0] == model
        slots = [(k[i], k[i + 1]) for i in range(0, len(k) - 1, 2)]
        return (model, layer) in slots


@dataclass
class Plan:
    """Nodes in dependency order, with their hashes."""

    cfg: RunConfig
    nodes: dict[str, Node] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    def add(self, node: Node) -> Node:
        if node.id in self.nodes:
            raise ConfigError(f"the plan declares node '{node.id}' twice")
        for d in node.deps:
            if d not in self.nodes:
                raise ConfigError(f"node '{node.id}' needs '{d}', which the plan does not declare")
        self.nodes[node.id] = node
        self.hashes[node.id] = config_hash(node.stage, list(node.key), node.params,
                                           [self.hashes[d] for d in sorted(node.deps)])
        return node

    def stage(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.stage == name]

    def closure(self, targets: list[str]) -> list[Node]:
        """The targets and everything they need, in dependency order."""
        need: set[str] = set()
        stack = list(targets)
        while stack:
            nid = stack.pop()
            if nid not in need:
                need.add(nid)
                stack.extend(self.nodes[nid].deps)
        return [n for nid, n in self.nodes.items() if nid in need]

    def downstream(self, ids: set[str]) -> set[str]:
        """Every node that reads one of ``ids``, directly or not (the ids included)."""
        out = set(ids)
        for nid, n in self.nodes.items():  # dependency order: one pass suffices
            if any(d in out for d in n.deps):
                out.add(nid)
        return out

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())


def model_pairs(cfg: RunConfig) -> list[tuple[ModelSpec, ModelSpec]]:
    """Every pair of models (A before B in config order)."""
    ms = cfg.models
    return [(ms[i], ms[j]) for i in range(len(ms)) for j in range(i + 1, len(ms))]


def layer_pairs(cfg: RunConfig, a: ModelSpec, b: ModelSpec) -> list[tuple[int, int]]:
    if cfg.matching.layer_pairs == "all":
        return [(la, lb) for la in a.layers for lb in b.layers]
    pairs = [tuple(p) for p in cfg.matching.layer_pairs]
    for la, lb in pairs:
        if la not in a.layers or lb not in b.layers:
            raise ConfigError(f"matching.layer_pairs: [{la}, {lb}] is not among the configured layers of "
                              f"'{a.key}' {list(a.layers)} and '{b.key}' {list(b.layers)}")
    return pairs


def _file_digest(path: str | None) -> str | None:
    """Content hash of a file that feeds results (the concepts YAML); the shipped one by default."""
    if path is None:
        from importlib import resources

        data = resources.files("saematch").joinpath("data/concepts.yaml").read_bytes()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"similarity.concepts: cannot read {path}: {exc.strerror or exc}") from None
    return hashlib.sha256(data).hexdigest()


def _validate_metrics(cfg: RunConfig) -> None:
    from saematch.registry import METRICS
    from saematch.similarity.base import get_metric

    sc = cfg.similarity
    names = set(sc.feature_metrics) | set(sc.activation_metrics) | set(sc.null_metrics)
    for name in sorted(names | set(sc.metric_params)):
        METRICS.get(name)
    for name, params in sc.metric_params.items():
        get_metric(name, **dict(params))


def build_plan(cfg: RunConfig) -> Plan:
    """Every node of the run described by ``cfg``, in dependency order."""

    _validate_metrics(cfg)
    lay = RunLayout(Path(cfg.run_dir))
    plan = Plan(cfg)
    models = [(m.key, m.name, m.revision) for m in cfg.models]
    corpus = plan.add(Node("corpus", (), lay.corpus(), (cfg.corpus, models), (), "saematch.corpus.stage:build"))
    feats: dict[tuple[str, int], str] = {}
    train_ids, extract_ids = [], []
    for m in cfg.models:
        ex = plan.add(Node("extract", (m.key,), lay.acts_model(m.key), (cfg.extract, m.name, m.revision),
                           (corpus.id,), "saematch.activations.stage:build",
                           parts=tuple(lay.acts(m.key, L) for L in m.layers),
                           preflight="saematch.activations.stage:preflight"))
        extract_ids.append(ex.id)
        for L in m.layers:
            sae_params = (L, m.sae_release, m.sae_id, m.sae_path) if m.pretrained else (L, cfg.sae)
            tr = plan.add(Node("train", (m.key, L), lay.sae(m.key, L), sae_params, (ex.id,), "saematch.sae.stage:build"))
            train_ids.append(tr.id)
            fe = plan.add(Node("features", (m.key, L), lay.features(m.key, L), cfg.features, (tr.id, ex.id, corpus.id),
                               "saematch.features.stage:build"))
            feats[m.key, L] = fe.id
    match_ids = []
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            n = plan.add(Node("match", (a.key, la, b.key, lb), lay.pairs(a.key, la, b.key, lb), cfg.matching,
                              (feats[a.key, la], feats[b.key, lb]), "saematch.matching.stage:build"))
            match_ids.append(n.id)
    cmp_deps = tuple(match_ids + list(feats.values()) + train_ids + extract_ids)
    cmp = plan.add(Node("compare", (), lay.similarity(), (cfg.similarity, _file_digest(cfg.similarity.concepts)),
                        cmp_deps, "saematch.similarity.stage:build"))
    plan.add(Node("report", (), lay.report(), cfg.report, (cmp.id, *cmp_deps), "saematch.report.stage:build"))
    return plan
