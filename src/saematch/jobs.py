"""List, or build on one rank, the nodes of a config's pipeline graph.

``python -m saematch.jobs CONFIG [--stage train] [--set KEY=VALUE ...]`` prints
one job per line: ``MODEL:LAYER`` for per-layer stages (train, features),
the node id otherwise.  Launch scripts hand each line to ``--only``.

``--build`` builds the jobs instead, split over the ranks of a launcher:

    torchrun --standalone --nproc-per-node 8 -m saematch.jobs CONFIG --stage train --build

Rank ``r`` of ``W`` (torchrun's ``RANK`` and ``WORLD_SIZE``; ``accelerate
launch`` sets the same) builds jobs ``r, r + W, r + 2W, ...`` one after the
other, each on its own GPU (``LOCAL_RANK``; see ``saematch.devices``).  The
inputs of the stage must be built already (extraction shards itself over the
same ranks: ``torchrun ... -m saematch.cli extract CONFIG``), so no two ranks
ever build the same node.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from saematch.errors import SaematchError

log = logging.getLogger(__name__)


def job_name(node: object) -> str:
    key = node.key  # type: ignore[attr-defined]
    return f"{key[0]}:{key[1]}" if len(key) == 2 else node.id  # type: ignore[attr-defined]


def rank_share(jobs: list, rank: int, world: int) -> list:
    """The jobs of rank ``rank`` of ``world``: ``rank, rank + world, ...``."""
    if not 0 <= rank < world:
        raise SaematchError(f"rank {rank} is not in [0, {world})")
    return jobs[rank::world]


def run_rank(cfg: object, stage: str, rank: int, world: int) -> list[str]:
    """Build this rank's share of the ``stage`` nodes; return their ids."""
    from saematch.runs import executor_for

    ex = executor_for(cfg)
    nodes = ex.plan.stage(stage)
    mine = rank_share(nodes, rank, world)
    ids = {n.id for n in nodes}
    missing = [n.id for n in ex.plan.closure([m.id for m in mine])
               if n.id not in ids and ex.state(n).state != "done"]
    if world > 1 and missing:
        raise SaematchError(f"rank {rank}: the inputs of the {stage} stage are not built ({', '.join(missing[:4])}"
                            f"{', ...' if len(missing) > 4 else ''}); build them first, e.g. "
                            f"`torchrun ... -m saematch.cli extract CONFIG`, so no two ranks build the same node")
    log.info("rank %d of %d: %d of %d %s jobs", rank, world, len(mine), len(nodes), stage)
    for node in mine:
        ex.build([node.id])
    return [n.id for n in mine]


def main(argv: list[str] | None = None) -> int:
    from saematch.config import load_config
    from saematch.graph.plan import STAGES, build_plan

    p = argparse.ArgumentParser(prog="python -m saematch.jobs", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--stage", default="train", choices=STAGES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--build", action="store_true", help="build this rank's jobs (RANK r of WORLD_SIZE W takes jobs "
                                                      "r, r + W, ...) instead of listing them")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.build:
            from saematch.cli import setup_logging

            setup_logging()
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            for node_id in run_rank(cfg, args.stage, rank, world):
                sys.stdout.write(f"rank {rank}: {node_id} done\n")
            return 0
        for node in build_plan(cfg).stage(args.stage):
            sys.stdout.write(job_name(node) + "\n")
    except SaematchError as exc:
        sys.stderr.write(f"saematch.jobs: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
