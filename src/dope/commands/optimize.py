"""``dope optimize``: grid or Optuna search of thresholds (and models), walk-forward, DSR and PBO.

    dope optimize --symbol BTCUSDT --interval 15m --predictions rf=rf.parquet zero=zero.parquet \\
        --uppers 0:0.002:5 --lowers -0.002:0:5 --train 28d --test 14d --out results/ --report report.html

Each predictions file (``NAME=FILE`` or ``FILE``, named by its stem) holds ``open_time`` and
``prediction``; rows for bars opening before their ``trained_until_ms`` (``dope predict`` writes it) are
refused unless ``--allow-in-sample``. The search over the whole span (grid heatmaps, DSR with every trial, PBO) and the
walk-forward optimization of each model and of all of them (out of sample only) run on Dask: a local
cluster unless ``--scheduler tcp://host:port`` names one (or ``--serial``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dope.commands.backtest import add_in_sample_argument
from dope.commands.options import add_stored_bars_arguments, open_store, time_option
from dope.errors import UserError


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
    from dope.backtest.report import report_data, save_report_data, write_report

    market, interval_ms = _market(args)
    with open_runner(args.scheduler, args.workers, args.serial, not args.no_progress) as runner:
        results, grid, dsr = optimize(market, args, interval_ms, runner)
    data = report_data(f"{args.symbol}: threshold optimization", market, results, grid, dsr,
                       notes=f"train {args.train}, test {args.test}, {args.method} search, fee {args.fee}")
    print(data.comparison.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(seed_spread_text(results, grid))
    for name, stats in data.overfitting.items():
        print(f"\n{name}:\n" + "\n".join(f"  {k}: {v}" for k, v in stats.items()))
    if args.out:
        save_report_data(data, Path(args.out))
        grid.table.to_parquet(Path(args.out) / "trials.parquet", index=False)
        for name, r in results.items():
            r.folds.to_parquet(Path(args.out) / f"folds-{name.replace(' ', '_').replace('/', '-')}.parquet",
                              index=False)
    if args.report:
        print(f"wrote {write_report(data, Path(args.report))}")
    return 0


def optimize(market: Any, args: argparse.Namespace, interval_ms: int, runner: Any) -> tuple[Any, Any, Any]:
    """The walk-forward variants, the search over the whole span and the variants' DSR."""
    from dope.backtest.optimize import SearchSpace
    from dope.backtest.walkforward import (
        SearchSpec,
        compare_models,
        deflate_variants,
        search,
        walk_forward_folds,
    )
    from dope.timeparse import parse_duration

    space = SearchSpace(tuple(market.predictions), parse_values(args.uppers), parse_values(args.lowers))
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, not {args.seeds}")
    spec = SearchSpec(space, args.method, args.trials, args.seed, args.objective, seeds=args.seeds)
    config = _config(args)
    try:
        folds = walk_forward_folds(market.n, parse_duration(args.train) // interval_ms,
                                   parse_duration(args.test) // interval_ms, args.anchored)
        results = compare_models(market, spec, config, folds, runner)
        grid = search(market, spec, config, (0, market.n), runner)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return results, grid, deflate_variants(results)


def seed_spread_text(results: dict[str, Any], grid: Any) -> str:
    """Per variant over its seeds: out-of-sample Sharpe and total return as mean ± sd (worst); and the
    whole-span search's best objective per seed. Empty for a grid (one seed)."""
    from dope.backtest.walkforward import SeedSpread, seed_groups

    groups = seed_groups(list(results))
    if not groups:
        return "one seed (a grid search is deterministic)"
    lines = ["spread over seeds (mean ± sd, worst):"]
    for base, names in groups.items():
        sharpe = SeedSpread.of([results[n].metrics["sharpe"] for n in names])
        total = SeedSpread.of([results[n].metrics["total_return"] for n in names])
        lines.append(f"  {base}: {len(names)} seeds, Sharpe {sharpe.text('.3g')}, total return {total.text('+.2%')}")
    best = grid.extra.get("seed_best")
    if best:
        lines.append(f"  whole-span search, best {grid.objective} per seed: {SeedSpread.of(best).text('.3g')} "
                     f"({grid.n_trials} trials in all, every seed counted in the DSR)")
    return "\n".join(lines)


def parse_values(text: str) -> tuple[float, ...]:
    """``START:STOP:COUNT`` (evenly spaced) or a comma-separated list of numbers."""
    from dope.backtest.optimize import linspace_values

    try:
        if ":" in text:
            start, stop, count = text.split(":")
            return linspace_values(float(start), float(stop), int(count))
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"bad threshold list {text!r}: use START:STOP:COUNT or a,b,c") from None


def _market(args: argparse.Namespace) -> tuple[Any, int]:
    from dope.backtest.optimize import market_from_frames
    from dope.commands.backtest import read_bars, read_predictions

    store, interval_ms = open_store(args)
    bars = read_bars(store, args.symbol, interval_ms, time_option(args.start), time_option(args.end))
    predictions = dict(_named(item) for item in args.predictions)
    try:
        return market_from_frames(bars, {n: read_predictions(p, args.allow_in_sample) for n, p in predictions.items()}, interval_ms), \
            interval_ms
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _named(item: str) -> tuple[str, Path]:
    name, sep, path = item.partition("=")
    return (name, Path(path)) if sep else (Path(item).stem, Path(item))


def _config(args: argparse.Namespace) -> Any:
    from dope.backtest.config import BacktestConfig

    try:
        return BacktestConfig(upper=0.0, lower=0.0, fee_rate=args.fee, slippage_bps=args.slippage_bps,
                              allow_short=args.short)
    except ValueError as exc:
        raise UserError(str(exc)) from None
