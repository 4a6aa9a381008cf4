"""Every bench in bench/ runs at a smoke size and prints its ratio against the baseline it measures.

A bench nobody runs breaks silently when the code under it changes; this runs each one (every
``bench/*.py``, found by listing the folder, so a new bench is covered without editing this file)
as a user would, in a subprocess, with ``--smoke``.  Outside references that are not installed
(EleutherAI sparsify for ``train_sae.py``) must be skipped by the bench itself, not by this test.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
EXTRA = {"match.py": [[], ["--grid"]]}  # benches with several modes: each mode runs
RATIO = re.compile(r"^.*\bratio\b[^\n]*?\d+(\.\d+)?", re.MULTILINE)

RUNS = [pytest.param(p.name, mode, id=" ".join([p.stem, *mode]))
        for p in sorted(BENCH.glob("*.py")) for mode in EXTRA.get(p.name, [[]])]


def test_every_bench_is_covered():
    assert {r.values[0] for r in RUNS} == {p.name for p in BENCH.glob("*.py")}
    assert len(RUNS) >= 5


@pytest.mark.parametrize("name, mode", RUNS)
def test_bench_runs_at_smoke_size(name, mode, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / name), *mode, "--smoke"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} {mode} failed:\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    assert RATIO.search(proc.stdout), f"{name} {mode} printed no ratio line:\n{proc.stdout[-2000:]}"
