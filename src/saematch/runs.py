"""Running a config: the public ``run`` and ``status`` over the pipeline graph."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from saematch.config import RunConfig, load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a run did.

    built: ids of the nodes built (empty when everything was up to date);
    times: seconds spent per stage; checks: manifest checks made; report: the
    report path when the report node was a target; headline: per-metric summary
    from the compare node, when it exists.
    """

    built: tuple[str, ...]
    times: dict[str, float]
    checks: int
    report: Optional[Path] = None
    headline: dict[str, Any] = field(default_factory=dict)
    calibrated: dict[str, Any] = field(default_factory=dict)


def _config(config: RunConfig | str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config, list(overrides))


def executor_for(cfg: RunConfig, logger: Any = None) -> Any:
    from saematch.graph.context import RunContext
    from saematch.graph.executor import Executor
    from saematch.graph.plan import build_plan

    return Executor(build_plan(cfg), RunContext(cfg, logger))


def run(config: RunConfig | str | Path, stages: Sequence[str] = ("report",), force: Optional[str] = None,
        only: Optional[str] = None, overrides: Sequence[str] = (), wandb: bool = False) -> RunResult:
    """Build the nodes of ``stages`` (default: the report, hence everything) and whatever they need.

    force: a stage whose (selected) nodes and everything downstream are rebuilt;
    only: ``MODEL:LAYER`` restricting the target nodes; wandb: log (offline unless
    ``wandb.mode: online``).
    """
    from saematch.artifacts import Stage
    from saematch.configio import to_dict
    from saematch.graph.executor import parse_only
    from saematch.logger import make_logger

    cfg = _config(config, overrides)
    wcfg = dataclasses.replace(cfg.wandb, enabled=True) if wandb else cfg.wandb
    logger = make_logger(wcfg, Path(cfg.run_dir), "+".join(stages), to_dict(cfg))
    try:
        ex = executor_for(cfg, logger)
        sel = parse_only(only)
        ex.build(ex.targets(tuple(stages), sel), force=force, only=sel)
    finally:
        logger.finish()
    sim, cal = Stage(ex.ctx.layout.similarity()), Stage(ex.ctx.layout.root / "calibration")
    headline = sim.manifest().get("summary", {}) if sim.manifest_path.is_file() else {}
    calibrated = cal.manifest().get("summary", {}) if cal.manifest_path.is_file() else {}
    report = ex.ctx.layout.report() / "report.html" if "report" in stages else None
    return RunResult(tuple(ex.built), dict(ex.times), ex.checks, report, headline, calibrated)


def status(config: RunConfig | str | Path, overrides: Sequence[str] = ()) -> list[Any]:
    """Every node's state (done, stale and why, missing), computing nothing."""
    return executor_for(_config(config, overrides)).status()
