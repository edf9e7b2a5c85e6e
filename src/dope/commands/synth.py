"""``dope synth``: write seeded synthetic bars into the store, or refit the synthetic market.

    dope synth BTCUSDT ETHUSDT SOLUSDT --start 2024-01-01 --duration 365d --interval 10s --seed 7
    dope synth --calibrate --data ../shared/data/binance
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dope.commands.options import interval_option
from dope.config import load_config
from dope.errors import UserError
from dope.timeparse import parse_duration, parse_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols to generate, e.g. BTCUSDT")
    parser.add_argument("--start", help="first bar, ISO date/time UTC (default: [synthetic] start)")
    parser.add_argument("--duration", help="how long, e.g. 1h, 30d, 365d, 52w (default: [synthetic] duration)")
    parser.add_argument("--interval", default=None, help="bar interval (default: [bars] interval)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: [synthetic] seed)")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--calibrate", action="store_true", help="refit the parameters on real data")
    parser.add_argument("--data", default="../shared/data/binance", help="real data folder for --calibrate")
    parser.add_argument("--params-out", help="where --calibrate writes (default: the packaged params file)")


def run(args: argparse.Namespace) -> int:
    if args.calibrate:
        return _calibrate(Path(args.data), args.params_out)
    if not args.symbols:
        raise UserError("give at least one symbol (e.g. dope synth BTCUSDT --duration 1d), or --calibrate")
    return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    from dope.market.synthetic import configured_bars
    from dope.store import BarStore

    config = load_config(args.config)
    synthetic = config.synthetic
    start = parse_time(args.start or synthetic.start)
    duration = parse_duration(args.duration or synthetic.duration)
    interval_ms = interval_option(args.interval or config.bars.interval)
    began = time.perf_counter()
    frames = configured_bars(synthetic, args.symbols, start, start + duration, interval_ms, seed=args.seed)
    store = BarStore(args.store or config.store.path)
    rows = sum(store.write_bars(frame, interval_ms) for frame in frames.values())
    print(f"wrote {rows} bars of {len(frames)} symbols to {store.root} in {time.perf_counter() - began:.1f} s")
    return 0


def _calibrate(data: Path, out: str | None) -> int:
    from dope.market.calibration import calibrate
    from dope.market.synthetic_params import bundled_params_path, save_params

    if not data.is_dir():
        raise UserError(f"real data folder not found: {data} (expected ../shared/data/binance)")
    params = calibrate(data)
    target = Path(out) if out else bundled_params_path()
    save_params(params, target)
    for symbol, p in params.symbols.items():
        print(f"{symbol}: sigma_10s={p.sigma_10s:.3g} dof={p.tail_dof:.1f} rate={p.trade_rate:.1f}/s "
              f"buy={p.taker_buy_share:.3f}")
    print(f"wrote {target}")
    return 0
