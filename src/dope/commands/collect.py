"""``dope collect``: run the collector service (trades from a source -> bars -> bus + store)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dope.bars import format_interval
from dope.config import DopeConfig, load_config, with_overrides
from dope.logs import setup_logging
from dope.messages import Bar

if TYPE_CHECKING:
    from dope.services.collector import CollectorCounters

log = logging.getLogger("dope.collect")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--source", choices=["replay", "synthetic", "binance"], help="where trades come from")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="symbols to collect")
    parser.add_argument("--interval", help="bar interval, e.g. 10s, 1m, 1h")
    parser.add_argument("--store", help="store directory")
    parser.add_argument("--files", nargs="+", metavar="FILE", help="trade files to replay (source=replay)")
    parser.add_argument("--speed", type=float, help="replay/synthetic speed: 0 = as fast as possible, 1 = real time")
    parser.add_argument("--bus", help="publish endpoint, e.g. tcp://127.0.0.1:5555 or ipc:///tmp/dope-bars")
    parser.add_argument("--no-bus", action="store_true", help="do not publish on the bus")
    parser.add_argument("--print", dest="print_bars", action="store_true", help="print every bar as it closes")


def config_from_args(args: argparse.Namespace) -> DopeConfig:
    """The configuration file (or defaults) with the command-line options on top."""
    overrides: dict[str, Any] = {}
    pairs = [("collector", "source", args.source), ("collector", "symbols", args.symbols),
             ("bars", "interval", args.interval), ("store", "path", args.store), ("replay", "files", args.files),
             ("replay", "speed", args.speed), ("synthetic", "speed", args.speed), ("bus", "publish", args.bus)]
    for section, name, value in pairs:
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    return with_overrides(load_config(args.config), overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    setup_logging(config.log_level)
    counters = asyncio.run(collect(config, publish=not args.no_bus, print_bars=args.print_bars))
    print(summary(counters, config.store.path), file=sys.stderr)
    return 0


SOURCE_KEYS = ("malformed", "duplicates", "out_of_order", "gap_backfills", "unrecoverable_trades", "bad_rows")
"""Source counters the exit summary always shows (when the source has them), zero or not."""


def summary(counters: CollectorCounters, store: str) -> str:
    """The exit line: bars, warm-up, the collector's problems and the source's counters."""
    counts = counters.as_dict()
    problems = {k: v for k, v in counts.items()
                if v and k not in {"trades", "bars", "empty_bars", "flushes", "warmup_bars"}}
    source = {k: v for k, v in counters.source.items() if k in SOURCE_KEYS or (v and k not in {"trades", "batches"})}
    return (f"collected {counts['trades']} trades into {counts['bars']} bars ({counts['empty_bars']} empty, "
            f"{counts['warmup_bars']} feature warm-up) in {store}; problems: {_pairs(problems)}; "
            f"source: {_pairs(source)}")


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


async def collect(config: DopeConfig, *, publish: bool = True, print_bars: bool = False) -> CollectorCounters:
    """Run the collector until its source ends or SIGINT/SIGTERM; return its counters."""
    from dope.services.collector import collector_of
    from dope.transport import open_publisher

    publisher = open_publisher(config.bus, config.collector.service_name) if publish else None
    if publisher is not None:
        log.info("publishing bars on %s", publisher.endpoint)
    collector = collector_of(config, publisher, on_bar=print_bar if print_bars else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        counters = await collector.run(stop)
    finally:
        if publisher is not None:
            publisher.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return counters


def print_bar(bar: Bar) -> None:
    """One line per bar, as a person watching the collector wants it."""
    when = datetime.fromtimestamp(bar.open_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    flag = "  (empty: no trade)" if bar.empty else ""
    print(f"{when}  {bar.symbol:<9} {format_interval(bar.interval_ms):>4}  o {bar.open:<12.8g} h {bar.high:<12.8g} "
          f"l {bar.low:<12.8g} c {bar.close:<12.8g} v {bar.volume:<12.6g} n {bar.count:>5}{flag}", flush=True)
