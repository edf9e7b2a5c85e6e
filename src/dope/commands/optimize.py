"""``dope optimize``: grid or Optuna search of thresholds (and models), walk-forward, DSR and PBO.

    dope optimize --symbol BTCUSDT --interval 15m --predictions rf=rf.parquet zero=zero.parquet \\
        --uppers 0:0.002:5 --lowers -0.002:0:5 --train 28d --test 14d --out results/ --report report.html

Each predictions file (``NAME=FILE`` or ``FILE``, named by its stem) holds ``open_time`` and
``prediction``; rows for bars opening before their ``trained_until_ms`` (``dope predict`` writes it) are
refused unless ``--allow-in-sample``. The search over the whole span (grid heatmaps, DSR with every trial, PBO) and the
walk-forward optimization of each model and of all of them (out of sample only) run on Dask: a local
cluster unless ``--scheduler tcp://host:port`` names one (or ``--serial``). The work is
:func:`dope.research.optimize`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dope.commands.backtest import add_in_sample_argument
from dope.commands.options import add_stored_bars_arguments, open_store, time_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope optimize``."""
    parser.add_argument("--predictions", nargs="+", required=True, metavar="[NAME=]FILE",
                        help="predictions files (Parquet or CSV: open_time, prediction), one per model")
    add_stored_bars_arguments(parser)
    parser.add_argument("--uppers", default="0:0.002:5", help="upper thresholds: START:STOP:COUNT or a,b,c")
    parser.add_argument("--lowers", default="-0.002:0:5", help="lower thresholds: START:STOP:COUNT or a,b,c")
    parser.add_argument("--method", choices=("grid", "optuna"), default="grid", help="search (default grid)")
    parser.add_argument("--trials", type=int, default=50, help="Optuna trials per search (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="first Optuna TPE seed (default 0)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="Optuna seeds SEED..SEED+N-1, each a variant, all counted as trials (default 5; "
                             "a grid is deterministic: one)")
    parser.add_argument("--objective", default="sharpe", help="metric to maximize (default sharpe)")
    parser.add_argument("--train", default="28d", help="walk-forward training window (default 28d)")
    parser.add_argument("--test", default="14d", help="walk-forward test window (default 14d)")
    parser.add_argument("--anchored", action="store_true", help="train on all the past (expanding window)")
    parser.add_argument("--fee", type=float, default=0.001, help="fee rate per side (default 0.001)")
    parser.add_argument("--slippage-bps", type=float, default=0.0, help="slippage in basis points (default 0)")
    parser.add_argument("--short", action="store_true", help="long/short instead of long/flat")
    parser.add_argument("--scheduler", help="Dask scheduler address tcp://host:port (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    parser.add_argument("--serial", action="store_true", help="no Dask: run everything in this process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", help="folder for the results (Parquet + summary.json; `dope report` reads it)")
    parser.add_argument("--report", help="write the HTML report to this file")
    add_in_sample_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Search, walk forward, print the comparison and the overfitting statistics, save and report."""
    from dope.backtest.parallel import open_runner
    from dope.research import load_bars, optimize

    store, interval_ms = open_store(args)
    bars = load_bars(args.symbol, interval_ms, start=time_option(args.start), end=time_option(args.end), store=store)
    with open_runner(args.scheduler, args.workers, args.serial, not args.no_progress) as runner:
        result = optimize(
            bars, dict(_named(item) for item in args.predictions), uppers=args.uppers, lowers=args.lowers,
            method=args.method, trials=args.trials, seed=args.seed, seeds=args.seeds, objective=args.objective,
            train=args.train, test=args.test, anchored=args.anchored, fee=args.fee, slippage_bps=args.slippage_bps,
            short=args.short, runner=runner, allow_in_sample=args.allow_in_sample,
            title=f"{args.symbol}: threshold optimization")
    print(result.comparison.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(result.seed_spread())
    for name, stats in result.overfitting.items():
        print(f"\n{name}:\n" + "\n".join(f"  {k}: {v}" for k, v in stats.items()))
    if args.out:
        result.save(args.out)
    if args.report:
        print(f"wrote {result.write_report(args.report)}")
    return 0


def _named(item: str) -> tuple[str, Path]:
    name, sep, path = item.partition("=")
    return (name, Path(path)) if sep else (Path(item).stem, Path(item))
