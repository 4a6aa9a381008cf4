"""List the nodes of a config's pipeline graph, for launch scripts.

``python -m saematch.jobs CONFIG [--stage train] [--set KEY=VALUE ...]`` prints
one job per line: ``MODEL:LAYER`` for per-layer stages (train, features),
the node id otherwise.  Launch scripts hand each line to ``--only``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from saematch.config import load_config
    from saematch.graph.plan import STAGES, build_plan

    p = argparse.ArgumentParser(prog="python -m saematch.jobs", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--stage", default="train", choices=STAGES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    plan = build_plan(load_config(args.config, args.overrides))
    for node in plan.stage(args.stage):
        per_layer = len(node.key) == 2
        sys.stdout.write((f"{node.key[0]}:{node.key[1]}" if per_layer else node.id) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
