"""The pipeline graph: artifact nodes declared from a config (:mod:`.plan`), built by one
executor (:mod:`.executor`) in dependency order, each stale node once per process."""

from saematch.graph.executor import Executor, NodeState
from saematch.graph.plan import STAGES, Node, Plan, build_plan, layer_pairs, model_pairs

__all__ = ["Executor", "Node", "NodeState", "Plan", "STAGES", "build_plan", "layer_pairs", "model_pairs"]
