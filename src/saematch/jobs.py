"""List the SAE jobs of a config as MODEL:LAYER, one per line, for launch scripts."""

from __future__ import annotations

import sys

from saematch.config import load_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = load_config(argv[0], argv[1:])
    for spec in cfg.models:
        for layer in spec.layers:
            sys.stdout.write(f"{spec.key}:{layer}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
