"""Command line: a thin ``main(argv)`` over :mod:`saematch.pipeline`.

User errors (:class:`~saematch.errors.SaematchError`) print one line and exit 2;
they never show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional

from saematch.errors import SaematchError

log = logging.getLogger("saematch")


def _config_parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set corpus.max_tokens=20000 (repeatable)")
    p.add_argument("--force", action="store_true", help="redo this stage even if its artifacts are up to date")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saematch", description="Do language models of different size and family learn the same SAE features?")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_parser(sub, "extract", "write aligned residual activations for every model and layer")
    return parser


def _cmd_extract(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.pipeline import run_extract

    cfg = load_config(args.config, args.overrides)
    results = run_extract(cfg, force=args.force)
    for r in results:
        log.info("%s: %d aligned units per layer", r.model, r.n_rows)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"extract": _cmd_extract}


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="saematch: %(message)s", stream=sys.stderr, force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except SaematchError as exc:
        print(f"saematch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saematch: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
