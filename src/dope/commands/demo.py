"""``dope demo``: DOPE's main job on the embedded default, with no network and no account.

At this stage: the collector replays the real Binance spot trades bundled with
DOPE (or runs the synthetic market), prints every bar as it closes, publishes
it on the bus and writes it to the store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from dope.config import DopeConfig, load_config, with_overrides
from dope.logs import setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=["replay", "synthetic"], default="replay",
                        help="bundled real trades (replay, default) or the synthetic market")
    parser.add_argument("--speed", type=float, default=20.0,
                        help="times real time (default 20: the 11 bundled minutes in about 33 s); 0 = at once")
    parser.add_argument("--store", default="var/demo/store", help="store directory (default var/demo/store)")
    parser.add_argument("--interval", default="10s", help="bar interval (default 10s)")


def demo_config(args: argparse.Namespace) -> DopeConfig:
    """The embedded default: bundled trades, a fresh random bus port, the demo store."""
    overrides = {
        "collector": {"source": args.source, "symbols": ["BTCUSDT", "ETHUSDT"]},
        "bars": {"interval": args.interval, "close_on": "event_time"},
        "store": {"path": args.store},
        "replay": {"speed": args.speed},
        "synthetic": {"speed": args.speed, "duration": "10m"},
        "bus": {"publish": "tcp://127.0.0.1:*", "snapshot": "tcp://127.0.0.1:*"},
    }
    return with_overrides(load_config(None), overrides, origin="dope demo")


def run(args: argparse.Namespace) -> int:
    from dope.commands.collect import collect

    config = demo_config(args)
    setup_logging(config.log_level)
    print(f"DOPE demo: {args.source} of BTCUSDT and ETHUSDT at {args.speed or 'full'}x speed -> "
          f"{config.bars.interval} bars -> bus + store {config.store.path} (Ctrl-C stops)", file=sys.stderr)
    counters = asyncio.run(collect(config, print_bars=True))
    print(f"done: {counters['trades']} trades -> {counters['bars']} bars ({counters['empty_bars']} empty). "
          f"Query them: .venv/bin/dope bars BTCUSDT --store {config.store.path} --every 1m", file=sys.stderr)
    return 0
