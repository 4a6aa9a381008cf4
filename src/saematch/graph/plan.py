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

STAGES = ("corpus", "extract", "train", "features", "match", "compare", "calibrate", "transfer", "crosscoder", "interactions",
          "report")


@dataclass(frozen=True)
class Variant:
    """A model key as the graph sees it: a configured model, or a control derived from one.

    key: ``MODEL`` or ``MODEL@seed1`` (twin SAEs), ``MODEL@random`` (random-init weights),
    ``MODEL@embed`` (the input embeddings entering block 0, stored as its one layer 0: token
    identity and nothing else), ``MODEL@shuffle`` (A's units permuted before matching);
    source: the configured model; kind: 'model', 'twin', 'random', 'embed' or 'shuffle';
    acts: whose activations it reads.
    """

    key: str
    source: str
    kind: str

    @property
    def acts(self) -> str:
        return self.key if self.kind in ("model", "random", "embed") else self.source


EMBED_LAYER = 0  # the one layer of a MODEL@embed variant: the residual entering block 0


def variant(key: str) -> Variant:
    if "@" not in key:
        return Variant(key, key, "model")
    source, tag = key.split("@", 1)
    kind = "twin" if tag.startswith("seed") else tag
    return Variant(key, source, kind)


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
        """Does ``--only MODEL:LAYER`` select this node?  MODEL is a key as ``python -m saematch.jobs``
        lists it (a control is ``MODEL@seed1``, ``MODEL@random``); an extract node matches on MODEL alone."""
        k = self.key
        if self.stage == "extract":
            return k[0] == model
        return (model, layer) in [(k[i], k[i + 1]) for i in range(0, len(k) - 1, 2)]


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


def random_keys(cfg: RunConfig) -> list[str]:
    """Configured models that get a random-init control (every model, or the one ``controls.random_model`` names)."""
    ctl = cfg.controls
    if not ctl.random_init:
        return []
    return [m.key for m in cfg.models if ctl.random_model in (None, m.key)]


def floor_matches(cfg: RunConfig, a: ModelSpec, la: int, b: ModelSpec, lb: int) -> dict[str, tuple[str, int, str, int]]:
    """The control matchings that floor the layer pair (A la, B lb), by floor name: ``random_a`` (A's architecture
    with random weights), ``random_b``, ``embed_a`` (A's input embeddings against B lb), ``embed_b``, ``shuffle``."""
    ctl, out = cfg.controls, {}
    rk = random_keys(cfg)
    if a.key in rk:
        out["random_a"] = (f"{a.key}@random", la, b.key, lb)
    if b.key in rk:
        out["random_b"] = (a.key, la, f"{b.key}@random", lb)
    if ctl.embed:
        out["embed_a"] = (f"{a.key}@embed", EMBED_LAYER, b.key, lb)
        out["embed_b"] = (a.key, la, f"{b.key}@embed", EMBED_LAYER)
    if ctl.shuffle:
        out["shuffle"] = (f"{a.key}@shuffle", la, b.key, lb)
    return out


def build_plan(cfg: RunConfig) -> Plan:
    """Every node of the run described by ``cfg``, in dependency order, controls included."""
    import dataclasses

    _validate_metrics(cfg)
    lay = RunLayout(Path(cfg.run_dir))
    plan = Plan(cfg)
    ctl = cfg.controls
    models = [(m.key, m.name, m.revision) for m in cfg.models]
    corpus = plan.add(Node("corpus", (), lay.corpus(), (cfg.corpus, models), (), "saematch.corpus.stage:build"))
    split = plan.add(Node("corpus", ("split",), lay.split(),
                          (cfg.calibration.heldout_frac, cfg.sae.eval_fraction, cfg.calibration.seed), (corpus.id,),
                          "saematch.corpus.split:build"))
    feats: dict[tuple[str, int], str] = {}
    extract: dict[str, str] = {}
    train_ids = []
    twin_sae = dataclasses.replace(cfg.sae, seed=ctl.twin_seed)

    def add_model(key: str, m: ModelSpec, extract_params: Any, sae_cfg: Any, own_extract: bool,
                  layers: tuple[int, ...] | None = None) -> None:
        layers = m.layers if layers is None else layers
        if own_extract:
            extract[key] = plan.add(Node(
                "extract", (key,), lay.acts_model(key), extract_params, (corpus.id,), "saematch.activations.stage:build",
                parts=tuple(lay.acts(key, L) for L in layers), preflight="saematch.activations.stage:preflight")).id
        ex = extract[variant(key).acts]
        for L in layers:
            pre = m.pretrained and variant(key).kind == "model"
            params = (L, m.sae_release, m.sae_id, m.sae_path) if pre else (L, sae_cfg)
            tr = plan.add(Node("train", (key, L), lay.sae(key, L), params, (ex, split.id), "saematch.sae.stage:build"))
            train_ids.append(tr.id)
            feats[key, L] = plan.add(Node("features", (key, L), lay.features(key, L), cfg.features,
                                          (tr.id, ex, corpus.id), "saematch.features.stage:build")).id

    for m in cfg.models:
        add_model(m.key, m, (cfg.extract, m.name, m.revision), cfg.sae, True)
    rand = random_keys(cfg)
    for m in cfg.models:
        if ctl.seed and not m.pretrained:
            add_model(f"{m.key}@seed{ctl.twin_seed}", m, None, twin_sae, False)
        if m.key in rand:
            add_model(f"{m.key}@random", m, ("random-init", ctl.random_seed, cfg.extract, m.name, m.revision), cfg.sae, True)
        if ctl.embed:
            add_model(f"{m.key}@embed", m, ("embed", cfg.extract, m.name, m.revision), cfg.sae, True, (EMBED_LAYER,))

    def add_match(ka: str, la: int, kb: str, lb: int, extra: Any = None) -> str:
        nid = ":".join(["match", ka, str(la), kb, str(lb)])
        if nid in plan.nodes:  # an embed floor serves every layer of the other model
            return nid
        fa = (variant(ka).source, la) if variant(ka).kind == "shuffle" else (ka, la)
        return plan.add(Node("match", (ka, la, kb, lb), lay.pairs(ka, la, kb, lb), (cfg.matching, extra),
                             (feats[fa], feats[kb, lb], split.id), "saematch.matching.stage:build")).id

    main_ids, control_ids = [], []
    for a, b in model_pairs(cfg):
        for la, lb in layer_pairs(cfg, a, b):
            main_ids.append(add_match(a.key, la, b.key, lb))
            for name, (ka, fla, kb, flb) in floor_matches(cfg, a, la, b, lb).items():
                nid = add_match(ka, fla, kb, flb, ctl.shuffle_seed if name == "shuffle" else None)
                if nid not in control_ids:
                    control_ids.append(nid)
    for m in cfg.models:
        if ctl.seed and not m.pretrained:
            twin = f"{m.key}@seed{ctl.twin_seed}"
            for L in m.layers:
                control_ids.append(add_match(m.key, L, twin, L))
    cmp_deps = tuple(main_ids + [feats[m.key, L] for m in cfg.models for L in m.layers]
                     + [f"train:{m.key}:{L}" for m in cfg.models for L in m.layers] + [extract[m.key] for m in cfg.models]
                     + [split.id])
    cmp = plan.add(Node("compare", (), lay.similarity(), (cfg.similarity, _file_digest(cfg.similarity.concepts)),
                        cmp_deps, "saematch.similarity.stage:build"))
    cal_deps = tuple(main_ids + control_ids + list(feats.values()) + train_ids + list(extract.values()) + [split.id])
    cal = plan.add(Node("calibrate", (), lay.root / "calibration", (cfg.calibration, ctl, cfg.similarity.max_units),
                        cal_deps, "saematch.calibration.stage:build"))
    # uses across models: one node per A layer, paired at build time with its best-matching B layer
    # (held-out matched correlation, from the calibrate node); off unless the config turns them on
    ext = []
    for a, b in model_pairs(cfg):
        for la in a.layers:
            if cfg.transfer.enabled:
                ext.append(plan.add(Node("transfer", (a.key, la, b.key), lay.root / "transfer" / f"{a.key}_L{la:02d}__{b.key}",
                                         (cfg.transfer, _file_digest(cfg.similarity.concepts)), (cal.id, *cal_deps),
                                         "saematch.transfer.node:build")).id)
            if cfg.crosscoder.enabled and (cfg.crosscoder.layers is None or la in cfg.crosscoder.layers):
                keys = [a.key] + ([f"{a.key}@random"] if a.key in rand else [])
                for ka in keys:  # the random-init control's crosscoder is the floor of the shared fraction
                    ext.append(plan.add(Node("crosscoder", (ka, la, b.key),
                                             lay.root / "crosscoders" / f"{ka}_L{la:02d}__{b.key}", cfg.crosscoder,
                                             (cal.id, *cal_deps), "saematch.crosscoder.node:build")).id)
    if cfg.interactions.enabled:
        # reads the corpus and the split only: prompts, masked forwards and interactions need no activations;
        # the random-init floor is built from the model's config with the controls' seed
        for a, b in model_pairs(cfg):
            ext.append(plan.add(Node("interactions", (a.key, b.key), lay.root / "interactions" / f"{a.key}__{b.key}",
                                     (cfg.interactions, ctl.random_seed, rand, cfg.extract.dtype,
                                      [(m.name, m.revision) for m in (a, b)]), (corpus.id, split.id),
                                     "saematch.interactions.node:build")).id)
    plan.add(Node("report", (), lay.report(), cfg.report, (cmp.id, cal.id, *cal_deps, *ext), "saematch.report.stage:build"))
    return plan
