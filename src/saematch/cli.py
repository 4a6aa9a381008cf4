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
    for name, text in [("train", "train (or load) an SAE per model and layer, with eval.json"),
                       ("eval", "re-evaluate the SAEs of a run and rewrite their eval.json")]:
        p = _config_parser(sub, name, text)
        p.add_argument("--wandb", action="store_true", help="log to wandb (offline unless wandb.mode=online)")
        p.add_argument("--only", metavar="MODEL:LAYER", help="just this SAE, e.g. smollm2-135m:13 (one job per GPU)")
    for name, text in [("compare", "similarity metrics with nulls over the layer grid"),
                       ("report", "heatmaps and a self-contained report.html")]:
        p = _config_parser(sub, name, text)
        p.add_argument("--wandb", action="store_true", help="log tables and images to wandb (offline by default)")
    r = sub.add_parser("run", help="every stage: corpus, extract, train, match, compare, report (cached, resumable)")
    r.add_argument("config")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--force", choices=["corpus", "extract", "train", "match", "compare", "report"],
                   help="redo this stage and every stage after it")
    r.add_argument("--wandb", action="store_true", help="log to wandb (offline by default)")
    _config_parser(sub, "match", "correlate SAE features across models and pair them (hungarian/max/mutual)")
    q = sub.add_parser("query", help="query matched pairs and feature cards of a run directory")
    q.add_argument("run_dir", help="a run directory (run_dir of the config)")
    q.add_argument("--layers", nargs=2, type=int, metavar=("LA", "LB"), help="only this layer pair")
    q.add_argument("--min-corr", type=float, default=-1.0, help="only pairs at or above this correlation")
    q.add_argument("--limit", type=int, default=10)
    q.add_argument("--all", action="store_true", help="include pairs flagged by the filters")
    q.add_argument("--partner", nargs=3, metavar=("MODEL", "LAYER", "FEATURE"), help="a feature's partners and cards")
    q.add_argument("--card", nargs=3, metavar=("MODEL", "LAYER", "FEATURE"), help="one feature's card")
    q.add_argument("--search", metavar="WORD", help="features whose top contexts contain WORD")
    q.add_argument("--summary", action="store_true", help="pairs per layer pair")
    q.add_argument("--sql", help="raw SQL over the views 'pairs' and 'features'")
    q.add_argument("--json", action="store_true", help="JSON output for scripts")
    return parser


def _cmd_match(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.pipeline import run_match

    cfg = load_config(args.config, args.overrides)
    infos = run_match(cfg, force=args.force)
    log.info("matched %d layer pairs; query them with: saematch query %s", len(infos), cfg.run_dir)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.runner import run_compare

    summary = run_compare(load_config(args.config, args.overrides), force=args.force)
    _print_headline(summary)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.runner import run_report

    cfg = load_config(args.config, args.overrides)
    path = _logged(cfg, args, "report", lambda logger: run_report(cfg, force=args.force, logger=logger))
    print(f"report: {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.runner import run_all

    cfg = load_config(args.config, args.overrides)
    res = _logged(cfg, args, "run", lambda logger: run_all(cfg, force=args.force, logger=logger))
    print(f"report: {res['report']}")
    print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in res["times"].items())
          + f" (total {sum(res['times'].values()):.0f}s)")
    _print_headline(res["headline"])
    return 0


def _print_headline(summary: dict) -> None:
    print(f"{'metric':<22}{'mean':>8}{'max':>8}{'beat null':>12}{'depth rho':>11}")
    for metric, v in summary.items():
        beat = f"{v['n_beat_null']}/{v['n_tested']}" if v["n_tested"] else "-"
        rho = v.get("spearman_depth", float("nan"))
        print(f"{metric:<22}{v['mean_score']:>8.3f}{v['max_score']:>8.3f}{beat:>12}{rho:>11.2f}")


def _cmd_query(args: argparse.Namespace) -> int:
    from saematch.matching.render import side_by_side, table, to_json
    from saematch.matching.store import PairStore

    store = PairStore(args.run_dir)
    if args.sql:
        df = store.sql(args.sql)
    elif args.partner:
        m, la, f = args.partner
        df = store.partner(m, int(la), int(f))
    elif args.card:
        m, la, f = args.card
        df = store.card(m, int(la), int(f))
    elif args.search:
        df = store.search(args.search, args.limit)
    elif args.summary:
        df = store.layer_pairs()
    else:
        la, lb = args.layers or (None, None)
        df = store.top_pairs(la, lb, args.min_corr, args.limit, only_kept=not args.all)
        if not args.json:
            print(side_by_side(df))
            return 0
    print(to_json(df) if args.json else table(df))
    return 0


def _logger(cfg, args: argparse.Namespace, name: str):
    from pathlib import Path

    from saematch.configio import to_dict
    from saematch.logger import make_logger

    wcfg = cfg.wandb
    if getattr(args, "wandb", False):
        import dataclasses

        wcfg = dataclasses.replace(wcfg, enabled=True)
    return make_logger(wcfg, Path(cfg.run_dir), name, to_dict(cfg))


def _logged(cfg, args: argparse.Namespace, name: str, work: Callable):
    """Run ``work(logger)`` with the run's logger, always finishing the logger."""
    logger = _logger(cfg, args, name)
    try:
        return work(logger)
    finally:
        logger.finish()


def _cmd_train(args: argparse.Namespace, evaluate_only: bool = False) -> int:
    from saematch.config import load_config
    from saematch.pipeline import run_sae

    cfg = load_config(args.config, args.overrides)
    only = None
    if args.only:
        key, _, layer = args.only.rpartition(":")
        if not key or not layer.isdigit():
            raise SaematchError(f"--only takes MODEL:LAYER, got '{args.only}'")
        only = (key, int(layer))
    evals = _logged(cfg, args, "eval" if evaluate_only else "train",
                    lambda logger: run_sae(cfg, force=args.force, logger=logger, evaluate_only=evaluate_only, only=only))
    for (model, layer), ev in evals.items():
        rec = "n/a" if ev.loss_recovered is None else f"{ev.loss_recovered:.3f}"
        log.info("%s L%d: FVU %.3f  L0 %.1f  dead %.1f%%  dense %.1f%%  loss recovered %s",
                 model, layer, ev.fvu, ev.l0, 100 * ev.dead_frac, 100 * ev.dense_frac, rec)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from saematch.config import load_config
    from saematch.pipeline import run_extract

    cfg = load_config(args.config, args.overrides)
    results = run_extract(cfg, force=args.force)
    for r in results:
        log.info("%s: %d aligned units per layer", r.model, r.n_rows)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "extract": _cmd_extract,
    "train": _cmd_train,
    "eval": lambda a: _cmd_train(a, evaluate_only=True),
    "match": _cmd_match,
    "compare": _cmd_compare,
    "report": _cmd_report,
    "run": _cmd_run,
    "query": _cmd_query,
}


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
