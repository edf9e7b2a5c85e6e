"""``dope backtest``: thresholds on a predictions file against stored bars, beside the baselines
(:func:`dope.research.backtest`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dope.commands.options import add_stored_bars_arguments, open_store, time_option

if TYPE_CHECKING:
    from dope.research import Backtest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope backtest``."""
    parser.add_argument("--predictions", required=True,
                        help="Parquet (or CSV) file with columns open_time (ms) and prediction")
    add_stored_bars_arguments(parser)
    parser.add_argument("--upper", type=float, default=0.0, help="buy above this prediction (default 0)")
    parser.add_argument("--lower", type=float, default=0.0, help="sell below this prediction (default 0)")
    parser.add_argument("--fee", type=float, default=0.001, help="fee rate per side (default 0.001)")
    parser.add_argument("--slippage-bps", type=float, default=0.0, help="slippage in basis points (default 0)")
    parser.add_argument("--short", action="store_true", help="long/short instead of long/flat")
    parser.add_argument("--cash", type=float, default=10_000.0, help="initial cash (default 10000)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of equity per position (default 1)")
    parser.add_argument("--engine", choices=("vectorized", "event"), default="vectorized",
                        help="backtest path (both give the same answer; default vectorized)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_in_sample_argument(parser)


def add_in_sample_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-in-sample`` of ``dope backtest`` and ``dope optimize``."""
    parser.add_argument("--allow-in-sample", action="store_true",
                        help="use predictions of bars opening before their model's trained_until_ms "
                             "(in sample: the model has seen that period); refused by default")


def run(args: argparse.Namespace) -> int:
    """Join predictions with the stored bars, backtest, print the metrics beside the baselines."""
    from dope.research import backtest, load_bars

    store, interval_ms = open_store(args)
    bars = load_bars(args.symbol, interval_ms, start=time_option(args.start), end=time_option(args.end), store=store)
    result = backtest(bars, Path(args.predictions), upper=args.upper, lower=args.lower, fee=args.fee,
                      slippage_bps=args.slippage_bps, short=args.short, cash=args.cash, fraction=args.fraction,
                      engine=args.engine, allow_in_sample=args.allow_in_sample)
    print(_as_json(args, result) if args.json else _as_table(args, result))
    return 0


def _as_table(args: argparse.Namespace, result: Backtest) -> str:
    header = (f"{args.symbol} {len(result.results['strategy'].equity)} bars, upper {args.upper}, lower {args.lower}, "
              f"fee {args.fee}, slippage {args.slippage_bps} bps, {'long/short' if args.short else 'long/flat'}")
    return header + "\n" + result.metrics.to_string(float_format=lambda v: f"{v:.6g}")


def _as_json(args: argparse.Namespace, result: Backtest) -> str:
    import msgspec

    from dope.research.backtests import json_number

    body = {"symbol": args.symbol, "interval_ms": result.interval_ms, "config": msgspec.to_builtins(result.config),
            **{name: {k: json_number(v) for k, v in r.metrics.items()} for name, r in result.results.items()}}
    return json.dumps(body, indent=2)
