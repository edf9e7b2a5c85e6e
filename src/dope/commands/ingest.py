"""``dope ingest FILE...``: import Binance public data files (trades, aggTrades, klines) into the store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dope.errors import UserError

if TYPE_CHECKING:
    from dope.store.files import FileInfo
    from dope.store.importer import ProgressBar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope ingest``."""
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="Binance data files: .csv, .csv.gz or .zip; trades, aggTrades or klines")
    parser.add_argument("--interval", help="bar interval for trades files (default: [bars] interval, 10s); "
                                           "klines are stored at their own interval")
    parser.add_argument("--symbol", help="symbol of the files (default: from each file name)")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip and count malformed rows instead of stopping at the first one")


def run(args: argparse.Namespace) -> int:
    """Import every file; print one line per file."""
    from dope.bars.interval import parse_interval
    from dope.config import load_config
    from dope.store import BarStore, ingest_files

    config = load_config(args.config)
    try:
        interval_ms = parse_interval(args.interval or config.bars.interval)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    store = BarStore(args.store or config.store.path)
    results = ingest_files(store, args.files, interval_ms, symbol=args.symbol,
                           on_bad="skip" if args.skip_bad_rows else "raise", progress=_progress_bar)
    for result in results:
        print(result.summary())
    return 0


def _progress_bar(info: FileInfo) -> ProgressBar:
    """A tqdm bar (shown on a terminal only) counting the rows read from one file."""
    from tqdm import tqdm

    bar: ProgressBar = tqdm(desc=info.path.name, unit=" rows", unit_scale=True, disable=None, leave=False)
    return bar
