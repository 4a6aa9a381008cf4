"""Shared argument parsing for the analysis scripts (public API only: saematch.RunStore)."""

from __future__ import annotations

import argparse
from pathlib import Path


def args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("run_dir", help="a run directory (run_dir of the config)")
    p.add_argument("out", help="folder for the figures and tables")
    a = p.parse_args()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    return a


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
