"""``dope bars SYMBOL``: query stored bars, optionally re-aggregated, and export them as CSV or Parquet."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from dope.commands.options import interval_option, time_option
from dope.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope bars``."""
    parser.add_argument("symbol", metavar="SYMBOL", help="symbol, e.g. BTCUSDT")
    parser.add_argument("--interval", help="stored interval to read (default: [bars] interval, 10s)")
    parser.add_argument("--every", help="re-aggregate to this interval (a multiple of --interval), e.g. 1m")
    parser.add_argument("--start", help="first open time: ISO 8601 (UTC unless it says otherwise) or epoch ms")
    parser.add_argument("--end", help="end (exclusive) open time: ISO 8601 or epoch ms")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="output format (default csv)")
    parser.add_argument("--output", "-o", help="output file (default: CSV on standard output)")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--config", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    """Read, re-aggregate and write the bars."""
    from dope.config import load_config
    from dope.research import load_bars

    config = load_config(args.config)
    interval_ms = interval_option(args.interval or config.bars.interval)
    every_ms = interval_option(args.every, "--every") if args.every else interval_ms
    if every_ms % interval_ms:
        raise UserError(f"--every {args.every} is not a multiple of the stored interval {interval_ms} ms")
    frame = load_bars(args.symbol, interval_ms, start=time_option(args.start), end=time_option(args.end),
                      every=every_ms, store=args.store or config.store.path)
    _write(frame, args.format, args.output)
    return 0


def _write(frame: pd.DataFrame, fmt: str, output: str | None) -> None:
    if fmt == "parquet":
        if output is None:
            raise UserError("--format parquet needs --output FILE")
        frame.to_parquet(output, index=False)
    elif output is None:
        try:
            frame.to_csv(sys.stdout, index=False)
        except BrokenPipeError:  # the reader (e.g. `head`) stopped early: that is fine
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        frame.to_csv(output, index=False)
