"""The executor: builds the stale nodes of a plan, once each, in dependency order.

Each node's manifests are checked once per process (sizes always; digests only
for files whose size or modification time changed since they were recorded).
``--force STAGE`` rebuilds that stage's selected nodes and everything
downstream of them; downstream nodes outside the targets lose their manifests,
so they are rebuilt when next needed and never read stale.  ``--only
MODEL:LAYER`` restricts the targets; what they need is built as usual.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from saematch.artifacts import Stage, check_writable
from saematch.errors import ArtifactError, ConfigError
from saematch.graph.plan import STAGES, Node, Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeState:
    """state: 'done', 'stale' or 'missing'; reason: why not done (empty when done)."""

    node: str
    stage: str
    state: str
    reason: str


def _builder(spec: str) -> Callable[..., Any]:
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def parse_only(text: Optional[str]) -> Optional[tuple[str, int]]:
    """``MODEL:LAYER`` -> (model, layer); a clear error otherwise."""
    if not text:
        return None
    key, _, layer = text.rpartition(":")
    if not key or not layer.isdigit():
        raise ConfigError(f"--only takes MODEL:LAYER, got '{text}'")
    return key, int(layer)


class Executor:
    """Builds nodes of ``plan`` with the run context ``ctx`` (models, stores opened once)."""

    def __init__(self, plan: Plan, ctx: Any):
        self.plan = plan
        self.ctx = ctx
        self._state: dict[str, NodeState] = {}
        self.checks = 0  # manifest checks made (one per node per process)
        self.times: dict[str, float] = {}
        self.built: list[str] = []

    def state(self, node: Node) -> NodeState:
        """The node's state on disk, checked once per process."""
        if node.id not in self._state:
            self.checks += 1
            self._state[node.id] = self._check(node)
        return self._state[node.id]

    def _check(self, node: Node) -> NodeState:
        h = self.plan.hashes[node.id]
        reasons = [r for d in node.manifest_dirs if (r := Stage(d).check(h)) is not None]
        if not reasons:
            return NodeState(node.id, node.stage, "done", "")
        if all(r == "missing" for r in reasons):
            return NodeState(node.id, node.stage, "missing", "not built yet")
        return NodeState(node.id, node.stage, "stale", next(r for r in reasons if r != "missing"))

    def status(self) -> list[NodeState]:
        """Every node's state; a node whose input will be rebuilt says so.  Computes nothing."""
        out, pending = [], set()
        for node in self.plan:
            st = self.state(node)
            if st.state == "done" and any(d in pending for d in node.deps):
                up = next(d for d in node.deps if d in pending)
                st = NodeState(st.node, st.stage, "done", f"input {up} will be rebuilt first")
            if st.state != "done":
                pending.add(node.id)
            out.append(st)
        return out

    def targets(self, stages: tuple[str, ...], only: Optional[tuple[str, int]] = None) -> list[str]:
        """Ids of the nodes of ``stages`` (restricted by ``--only``), after the corpus stage's (the corpus and its
        document split), which every command builds."""
        ids = [n.id for n in self.plan if n.stage in stages and (only is None or n.matches(*only))]
        if not ids:
            what = f" for --only {only[0]}:{only[1]}" if only else ""
            raise ConfigError(f"no {'/'.join(stages)} nodes in this config{what}")
        return [n.id for n in self.plan.stage("corpus") if n.id not in ids] + ids

    def build(self, targets: list[str], force: Optional[str] = None, only: Optional[tuple[str, int]] = None) -> None:
        """Build every stale node that ``targets`` need, in dependency order."""
        if force is not None and force not in STAGES:
            raise ConfigError(f"--force takes a stage ({', '.join(STAGES)}), got '{force}'")
        check_writable(self.ctx.layout.root)
        order = self.plan.closure(targets)
        forced: set[str] = set()
        if force:
            seeds = {n.id for n in order if n.stage == force and (only is None or n.matches(*only))}
            forced = self.plan.downstream(seeds)
            for nid in forced - {n.id for n in order}:  # outside this command's targets: drop, rebuild later
                for d in self.plan.nodes[nid].manifest_dirs:
                    Stage(d).invalidate()
                self._state.pop(nid, None)
        todo = [n for n in order if n.id in forced or self.state(n).state != "done"]
        for node in todo:
            if node.preflight:
                _builder(node.preflight)(node, self.ctx)
        started: set[str] = set()
        for node in todo:
            if node.stage not in started:
                started.add(node.stage)
                log.info("stage %s ...", node.stage)
            t = time.perf_counter()
            _builder(node.builder)(node, self.ctx, self.plan.hashes[node.id])
            self.times[node.stage] = self.times.get(node.stage, 0.0) + time.perf_counter() - t
            self.built.append(node.id)
            st = self._state[node.id] = self._check(node)
            if st.state != "done":  # a builder must leave a complete artifact
                raise ArtifactError(f"node {node.id} was built but its manifest does not check: {st.reason}")
