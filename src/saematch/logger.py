"""Metrics logging: a null logger by default, wandb (offline) when asked.

wandb is imported only when a :class:`WandbLogger` is created, and it runs in
offline mode unless the config says ``wandb.mode: online``; its files go under
the run directory.  Sync later with ``wandb sync RUN_DIR/wandb/offline-run-*``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Protocol

from saematch.config import WandbConfig


class Logger(Protocol):
    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None: ...
    def image(self, key: str, path: Path) -> None: ...
    def table(self, key: str, frame: Any) -> None: ...
    def finish(self) -> None: ...


class NullLogger:
    """Logs nothing; what runs without ``--wandb``."""

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def table(self, key: str, frame: Any) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """One wandb run; offline by default, with its files kept in ``run_dir/wandb``."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, config: dict[str, Any]):
        wdir = Path(run_dir) / "wandb"
        wdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_MODE", cfg.mode)
        for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            os.environ.setdefault(var, str(wdir))
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=name, dir=str(wdir),
                              mode=os.environ["WANDB_MODE"], config=config, reinit="finish_previous")
        self.dir = Path(self.run.dir).parent

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        self.run.log(metrics, step=step)

    def image(self, key: str, path: Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def table(self, key: str, frame: Any) -> None:
        self.run.log({key: self._wandb.Table(dataframe=frame)})

    def finish(self) -> None:
        self.run.finish()


def make_logger(cfg: WandbConfig, run_dir: Path, name: str, config: dict[str, Any]) -> Logger:
    return WandbLogger(cfg, run_dir, name, config) if cfg.enabled else NullLogger()
