"""Command line: a thin ``main(argv)`` over :mod:`saematch.runs`.

Each pipeline command is a target of the graph: it builds its nodes and
whatever they need.  ``--force STAGE`` and ``--only MODEL:LAYER`` mean the
same on every command.  User errors (:class:`~saematch.errors.SaematchError`)
print one line and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Optional

from saematch.errors import SaematchError

log = logging.getLogger("saematch")

STAGE_NAMES = ("corpus", "extract", "train", "features", "match", "compare", "calibrate", "transfer", "crosscoder", "interactions",
               "report")
TARGETS = {
    "extract": ("extract", "write aligned residual activations for every model and layer"),
    "train": ("train", "train (or load) an SAE per model and layer, with eval.json"),
    "features": ("features", "sparse SAE activations and feature cards per model and layer"),
    "match": ("match", "correlate SAE features across models and pair them"),
    "compare": ("compare", "similarity metrics with permutation nulls over the layer grid"),
    "calibrate": ("calibrate", "every readout between its floor (random-init, shuffle) and ceiling (seed twin)"),
    "transfer": ("transfer", "maps, SAE, steering and probe transfer across models (transfer.enabled)"),
    "crosscoder": ("crosscoder", "a crosscoder per A layer and its best B layer (crosscoder.enabled)"),
    "interactions": ("interactions", "AND/OR interactions between input words per model pair, shared against floors "
                                     "and a ceiling (interactions.enabled)"),
    "report": ("report", "heatmaps and a self-contained report.html"),
    "run": ("report", "every stage: corpus, extract, train, features, match, compare, calibrate, report (cached, resumable)"),
}


def _config_parser(sub: argparse._SubParsersAction, name: str, help: str, graph: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set corpus.max_tokens=20000 (repeatable)")
    if graph:
        p.add_argument("--force", choices=STAGE_NAMES, metavar="STAGE",
                       help=f"rebuild this stage's nodes and everything after them ({', '.join(STAGE_NAMES)})")
        p.add_argument("--only", metavar="MODEL:LAYER", help="only the nodes of this model and layer, e.g. "
                                                             "smollm2-135m:12 (one job per GPU); what they need is built")
        p.add_argument("--wandb", action="store_true", help="log to wandb (offline unless wandb.mode=online)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saematch", description="Do language models of different size and family learn the same SAE features?")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, text) in TARGETS.items():
        _config_parser(sub, name, text)
    _config_parser(sub, "eval", "re-evaluate the SAEs of a run and rewrite their eval.json")
    _config_parser(sub, "status", "every node of the run with its state (done, stale and why, missing); computes nothing",
                   graph=False)
    c = _config_parser(sub, "config", "print the resolved config", graph=False)
    c.add_argument("--explain", action="store_true", help="every key with its value and its meaning")
    sv = sub.add_parser("serve", help="open the run's pair browser locally (Python's http.server)")
    sv.add_argument("run_dir", help="a run directory (run_dir of the config)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--open", action="store_true", help="open it in the default web browser")
    q = sub.add_parser("query", help="query matched pairs and feature cards of a run directory")
    q.add_argument("run_dir", help="a run directory (run_dir of the config)")
    q.add_argument("--layers", nargs=2, type=int, metavar=("LA", "LB"), help="only this layer pair")
    q.add_argument("--min-corr", type=float, default=-1.0, help="only pairs at or above this correlation")
    q.add_argument("--limit", type=int, default=10)
    q.add_argument("--all", action="store_true", help="include pairs flagged by the filters")
    q.add_argument("--universal", action="store_true", help="only universal pairs (held-out correlation above the floor's "
                                                              "99th percentile and near the seed-twin ceiling)")
    q.add_argument("--partner", nargs=3, metavar=("MODEL", "LAYER", "FEATURE"), help="a feature's partners and cards")
    q.add_argument("--card", nargs=3, metavar=("MODEL", "LAYER", "FEATURE"), help="one feature's card")
    q.add_argument("--search", metavar="WORD", help="features whose top contexts contain WORD")
    q.add_argument("--summary", action="store_true", help="pairs per layer pair")
    q.add_argument("--sql", help="raw SQL over the views 'pairs' and 'features'")
    q.add_argument("--json", action="store_true", help="JSON output for scripts")
    return parser


def _cmd_target(args: argparse.Namespace) -> int:
    from saematch.runs import run

    stage = TARGETS[args.command][0]
    res = run(args.config, (stage,), force=args.force, only=args.only, overrides=args.overrides, wandb=args.wandb)
    if not res.built:
        log.info("%s: everything up to date (%d nodes checked)", args.command, res.checks)
    if args.command in ("run", "report") and res.report is not None:
        print(f"report: {res.report}")
    if args.command == "run" and res.times:
        print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in res.times.items())
              + f" (total {sum(res.times.values()):.0f}s)")
    if args.command in ("run", "calibrate") and res.calibrated:
        _print_calibrated(res.calibrated)
    if args.command == "compare" and res.headline:
        _print_headline(res.headline)
    return 0


def _print_calibrated(summary: dict) -> None:
    print("floors: random (random weights) and token (input embeddings), each the higher of the two sides; "
          "calibrated = (score - strongest floor) / (ceiling - floor), raw readouts (s - f) / (1 - f); "
          "means over informative layer pairs")
    print(f"{'readout':<15}{'random':>8}{'token':>8}{'score':>8}{'ceiling':>9}{'calib.':>8}{'>random':>9}{'>token':>8}"
          f"{'uninf.':>8}")
    for name, v in summary.get("readouts", {}).items():
        nan = float("nan")
        print(f"{name:<15}{v.get('mean_floor_random', nan):>8.3f}{v.get('mean_floor_token', nan):>8.3f}"
              f"{v.get('mean_score', nan):>8.3f}{v.get('mean_ceiling', nan):>9.3f}{v.get('mean_calibrated', nan):>8.3f}"
              f"{v.get('mean_calibrated_random', nan):>9.3f}{v.get('mean_calibrated_token', nan):>8.3f}"
              f"{v['n_uninformative']:>5}/{v['n_layer_pairs']:<3}")
    for key, share in summary.get("universal_share_at_best", {}).items():
        print(f"{key}: {share:.1%} of live features have a universal partner at the chosen layer")


def _cmd_eval(args: argparse.Namespace) -> int:
    from saematch.graph.executor import parse_only
    from saematch.runs import _config, executor_for
    from saematch.sae.stage import reevaluate

    cfg = _config(args.config, args.overrides)
    ex = executor_for(cfg)
    targets = ex.targets(("train",), parse_only(args.only))
    ex.build(targets, force=args.force, only=parse_only(args.only))
    for nid in targets:
        ev = reevaluate(ex.plan.nodes[nid], ex.ctx)
        rec = "n/a" if ev.loss_recovered is None else f"{ev.loss_recovered:.3f}"
        log.info("%s: FVU %.3f  L0 %.1f  dead %.1f%%  dense %.1f%%  loss recovered %s",
                 nid, ev.fvu, ev.l0, 100 * ev.dead_frac, 100 * ev.dense_frac, rec)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from saematch.runs import status

    states = status(args.config, args.overrides)
    width = max(len(s.node) for s in states)
    for s in states:
        print(f"{s.node:<{width}}  {s.state:<8} {s.reason}".rstrip())
    counts = {k: sum(s.state == k for s in states) for k in ("done", "stale", "missing")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(states)} nodes")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    from saematch.config import load_config
    from saematch.configio import explain, to_dict

    cfg = load_config(args.config, args.overrides)
    if not args.explain:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    for key, value, doc, hashed in explain(cfg):
        shown = "" if value == "" else json.dumps(value)
        print(f"{key} = {shown}".rstrip(" =") + (f"    # {doc}" if doc else "") + ("" if hashed else " [not hashed]"))
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
        df = store.top_pairs(la, lb, args.min_corr, args.limit, only_kept=not args.all, universal=args.universal)
        if not args.json:
            print(side_by_side(df))
            return 0
    print(to_json(df) if args.json else table(df))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from saematch.report.serve import serve

    serve(args.run_dir, args.port, open_browser=args.open)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    **{name: _cmd_target for name in TARGETS},
    "eval": _cmd_eval,
    "status": _cmd_status,
    "config": _cmd_config,
    "query": _cmd_query,
    "serve": _cmd_serve,
}


MISSING_HINTS = {
    "sae_lens": "pip install sae-lens==6.54.12 (on a GPU machine with no network, see train/README.md)",
    "transformer_lens": "it comes with sae-lens: pip install sae-lens==6.54.12 (offline: train/README.md)",
}


def setup_logging(verbose: bool = False) -> None:
    """The CLI's log format on stderr; chatty libraries at WARNING."""
    rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", 1)) > 1 else None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"saematch{'[rank ' + rank + ']' if rank else ''}: %(message)s", stream=sys.stderr, force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except SaematchError as exc:
        print(f"saematch: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional heavy dependency (SAELens) missing on this machine
        if (exc.name or "").split(".")[0] not in MISSING_HINTS:
            raise
        print(f"saematch: error: this step needs the package '{exc.name}': {MISSING_HINTS[exc.name.split('.')[0]]}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saematch: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
