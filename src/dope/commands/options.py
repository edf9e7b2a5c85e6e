"""Options that several commands share: the stored bars to read, intervals and times typed by people."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dope.errors import UserError

if TYPE_CHECKING:
    from dope.store import BarStore


def add_stored_bars_arguments(parser: argparse.ArgumentParser) -> None:
    """``--symbol --interval --store --config --start --end``: which stored bars a command reads."""
    parser.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    parser.add_argument("--interval", help="stored bar interval (default: [bars] interval)")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--start", help="first open time: ISO 8601 (UTC unless it says otherwise) or epoch ms")
    parser.add_argument("--end", help="end (exclusive) open time: ISO 8601 or epoch ms")


def interval_option(text: str, option: str = "--interval") -> int:
    """An interval typed for ``option`` in ms; a bad one is a user error naming the option."""
    from dope.bars.interval import parse_interval

    try:
        return parse_interval(text)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None


def time_option(text: str | None) -> int | None:
    """Epoch ms of a typed time (ISO 8601 or epoch ms), or None."""
    from dope.timeparse import parse_time

    return None if text is None else parse_time(text)


def open_store(args: argparse.Namespace, interval: bool = True) -> tuple[BarStore, int]:
    """The store named by ``--store`` (else the config's) and ``--interval`` in ms (else the config's)."""
    from dope.config import load_config
    from dope.store import BarStore

    config = load_config(args.config)
    text = (getattr(args, "interval", None) or config.bars.interval) if interval else config.bars.interval
    return BarStore(args.store or config.store.path), interval_option(text)
