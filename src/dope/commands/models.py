"""``dope models list | show | promote | retire | approve | scorecards | history | kinds | check``: the model
registry and the model kinds from the terminal.

    dope models list
    dope models show lightgbm-20260101T0000-ab12cd
    dope models promote lightgbm-20260101T0000-ab12cd --role champion
    dope models retire ridge-20251201T0900-0f1e2d
    dope models approve ridge-20251201T0900-0f1e2d   # apply the loop's proposal ([loop] mode = "propose")
    dope models scorecards [ID] [--symbol S]   # live scorecards saved by the rendezvous
    dope models history [--json]               # the audit log of model decisions (dope.loop.audit)
    dope models kinds [--json]                 # built-in and plugin model kinds, and where each comes from
    dope models check KIND [--params K=V ...]  # the conformance suite (docs/plugins.md); exit 1 on a failure
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dope.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope models``."""
    parser.add_argument("action", choices=("list", "show", "promote", "retire", "approve", "scorecards", "history",
                                           "kinds", "check"), help="what to do")
    parser.add_argument("model_id", nargs="?", metavar="MODEL_ID",
                        help="the model (show, promote, retire, approve); the model kind for check")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE", help="model parameters (check)")
    parser.add_argument("--no-features", action="store_true", help="check: skip the feature parity tests")
    parser.add_argument("--no-latency-budget", action="store_true",
                        help="check: time predict_one but do not fail on the 100 us / 2 ms budgets (busy machine)")
    parser.add_argument("--role", default="champion",
                        help="role for promote: champion, challenger, shadow, canary (default champion)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (list, show, scorecards, history)")
    parser.add_argument("--symbol", help="only this symbol's cards (scorecards)")
    parser.add_argument("--registry", help="registry folder (default: [registry] path)")
    parser.add_argument("--config", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    """Dispatch the action."""
    from dope.commands.predict import open_registry

    if args.action == "scorecards":  # the rendezvous' live scorecards (optionally of MODEL_ID)
        from dope.commands.scorecards import show

        return show(args)
    if args.action == "kinds":
        _kinds(args.json)
        return 0
    if args.action == "check":
        return _check(args)
    registry = open_registry(args)
    if args.action == "list":
        _list(registry.list(), args.json)
        return 0
    if args.action == "history":
        _history(registry.root, args.json)
        return 0
    if not args.model_id:
        raise UserError(f"`dope models {args.action}` needs a MODEL_ID (see `dope models list`)")
    if args.action == "show":
        print(json.dumps(registry.show(args.model_id), indent=2, sort_keys=True))
    elif args.action == "approve":
        from dope.loop.controller import approve

        entry = approve(registry, args.model_id)
        print(f"{args.model_id} is now champion (proposal of {entry.time_ms}, p {entry.p_value:.3g}; "
              f"roles revision {registry.revision()}; audited)")
    elif args.action == "promote":
        registry.promote(args.model_id, args.role)
        print(f"{args.model_id} is now {args.role} (roles revision {registry.revision()})")
    else:
        registry.retire(args.model_id)
        print(f"{args.model_id} is retired (roles revision {registry.revision()})")
    return 0


def _list(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return
    if not entries:
        print("no models registered")
        return
    print(f"{'model_id':42} {'role':10} {'symbol':9} {'interval':>8} {'trained on':41} {'rmse/zero':>9}")
    for meta in entries:
        print(_row(meta))


def _row(meta: dict[str, Any]) -> str:
    if "error" in meta:
        return f"{meta['model_id']:42} {meta['role']:10} BROKEN: {meta['error']}"
    data, metrics = meta["data"], meta.get("metrics", {})
    span = f"{data['train_start'][:16]} .. {data['train_end'][:16]}"
    return (f"{meta['model_id']:42} {meta['role'] or '-':10} {data['symbol']:9} {data['interval_ms']:>8} "
            f"{span:41} {_ratio(metrics):>9}")


def _ratio(metrics: dict[str, Any]) -> str:
    model, zero = metrics.get("model", {}).get("rmse"), metrics.get("zero_baseline", {}).get("rmse")
    return f"{model / zero:.4f}" if model is not None and zero else "-"


def _history(root: Path, as_json: bool) -> None:
    from dope.loop.audit import AUDIT_FILE, AuditLog, entry_dict

    entries = [entry_dict(e) for e in AuditLog(root / AUDIT_FILE).read()]
    if as_json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return
    if not entries:
        print(f"no decisions logged in {root / AUDIT_FILE}")
        return
    print(f"{'market time (UTC)':20} {'action':8} {'model_id':42} {'from -> to':24} {'DM':>7} {'p':>8} "
          f"{'bars':>6} {'thresh':>7}  reason")
    for entry in entries:
        print(_history_row(entry))


def _history_row(e: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(e["time_ms"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    roles = f"{e['from_role'] or '-'} -> {e['to_role'] or '-'}"
    return (f"{when:20} {e['action']:8} {e['model_id']:42} {roles:24} {_num(e['statistic'], '.2f'):>7} "
            f"{_num(e['p_value'], '.2g'):>8} {_num(e['n_bars'], 'd'):>6} {_num(e['threshold'], '.3g'):>7}  "
            f"{e['reason']}")


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _kinds(as_json: bool) -> None:
    from dope.models.kinds import known_kinds

    kinds = known_kinds()
    if as_json:
        print(json.dumps([{"kind": k.name, "class": k.target, "source": k.source} for k in kinds], indent=2))
        return
    print(f"{'kind':24} {'class':48} source")
    for k in kinds:
        print(f"{k.name:24} {k.target:48} {k.source}")


def _check(args: argparse.Namespace) -> int:
    from dope.commands.train import parse_params
    from dope.models.base import ModelError
    from dope.training.conformance import run_suite

    if not args.model_id:
        raise UserError("`dope models check` needs a model KIND (see `dope models kinds`)")
    try:
        report = run_suite(args.model_id, parse_params(args.params), features=not args.no_features,
                           latency_budgets=not args.no_latency_budget)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    print(report.text())
    return 0 if report.passed else 1
