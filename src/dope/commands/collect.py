"""``dope collect``: run the collector service (trades from a source -> bars -> bus + store)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from dope.bars import format_interval
from dope.config import DopeConfig, load_config, with_overrides
from dope.logs import setup_logging
from dope.messages import Bar

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
    problems = {k: v for k, v in counters.items() if k not in {"trades", "bars", "empty_bars", "flushes"}}
    print(f"collected {counters['trades']} trades into {counters['bars']} bars "
          f"({counters['empty_bars']} empty) in {config.store.path}; problems: {problems or 'none'}",
          file=sys.stderr)
    return 0


async def collect(config: DopeConfig, *, publish: bool = True, print_bars: bool = False) -> dict[str, int]:
    """Run the collector until its source ends or SIGINT/SIGTERM; return its counters."""
    from dope.services.collector import Collector
    from dope.services.sources import open_source
    from dope.store import BarStore
    from dope.transport import open_publisher

    source, clock = open_source(config)
    publisher = open_publisher(config.bus, config.collector.service_name) if publish else None
    if publisher is not None:
        log.info("publishing bars on %s", publisher.endpoint)
    collector = Collector(config.collector, config.bars, source, BarStore(config.store.path), publisher,
                          clock=clock, on_bar=print_bar if print_bars else None,
                          heartbeat_ms=config.bus.heartbeat_ms)
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
    return counters.as_dict()


def print_bar(bar: Bar) -> None:
    """One line per bar, as a person watching the collector wants it."""
    when = datetime.fromtimestamp(bar.open_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    flag = "  (empty: no trade)" if bar.empty else ""
    print(f"{when}  {bar.symbol:<9} {format_interval(bar.interval_ms):>4}  o {bar.open:<12.8g} h {bar.high:<12.8g} "
          f"l {bar.low:<12.8g} c {bar.close:<12.8g} v {bar.volume:<12.6g} n {bar.count:>5}{flag}", flush=True)
