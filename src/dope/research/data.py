"""Bars for research: from the store, or straight from Binance public data files (klines or trades).

Both paths go through the validated readers and the one bar aggregation of :mod:`dope.bars`, so the
bars are those ``dope ingest`` would store and ``dope bars`` would print.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dope.bars import align, resample_bars
from dope.bars.interval import parse_interval
from dope.errors import UserError
from dope.store import BarStore, IngestResult, detect_file, ingest_files, iter_trades, read_klines
from dope.store.importer import ChunkedBars
from dope.timeparse import parse_time

Interval = str | int
"""An interval typed by a person (``"10s"``, ``"15m"``, ``"1h"``) or in milliseconds."""
Time = str | int | None
"""A time: ISO 8601 (UTC unless it says otherwise), epoch milliseconds, or None (unbounded)."""
StoreLike = str | Path | BarStore | None
"""A store folder, an open :class:`~dope.store.BarStore`, or None for the configuration's ``[store] path``."""


def interval_ms(interval: Interval, name: str = "interval") -> int:
    """Milliseconds of an interval; a bad one is a :class:`~dope.errors.UserError` naming ``name``.

    >>> interval_ms("15m"), interval_ms(3_600_000)
    (900000, 3600000)
    """
    if isinstance(interval, int):
        return interval
    try:
        return parse_interval(interval)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None


def time_ms(time: Time) -> int | None:
    """Epoch milliseconds of a time, or None.

    >>> time_ms("2025-01-01"), time_ms(None)
    (1735689600000, None)
    """
    return None if time is None else time if isinstance(time, int) else parse_time(time)


def open_store(store: StoreLike = None) -> BarStore:
    """The store: ``store`` itself, the folder it names, or the configuration's ``[store] path``."""
    if isinstance(store, BarStore):
        return store
    if store is None:
        from dope.config import load_config

        store = load_config(None).store.path
    return BarStore(store)


def load_bars(symbol: str, interval: Interval = "10s", *, start: Time = None, end: Time = None,
              every: Interval | None = None, store: StoreLike = None) -> pd.DataFrame:
    """Stored bars of ``symbol`` at ``interval`` opening in ``[start, end)``.

    With ``every`` (a multiple of ``interval``), the bars of the whole ``every`` windows covering that
    range, re-aggregated to ``every`` (``dope bars --every``). A symbol not stored at ``interval`` is a
    :class:`~dope.errors.UserError` naming the symbols that are.
    """
    stored = interval_ms(interval)
    bars = open_store(store)
    bars.require_symbol(symbol, stored)
    first, stop = time_ms(start), time_ms(end)
    if every is None:
        return bars.read_bars(symbol, stored, first, stop)
    every_ms = interval_ms(every, "every")
    if every_ms % stored:
        raise UserError(f"every {every} is not a multiple of the stored interval {stored} ms")
    frame = bars.read_bars(symbol, stored, align(first, every_ms) if first is not None else None,
                           align(stop + every_ms - 1, every_ms) if stop is not None else None)
    return frame if every_ms == stored else resample_bars(frame, stored, every_ms)


def read_files(paths: Iterable[str | Path], *, interval: Interval = "10s", symbol: str | None = None,
               every: Interval | None = None) -> pd.DataFrame:
    """Bars from Binance public data files, without a store: klines at their own interval, trades and
    aggTrades aggregated into ``interval`` bars; then re-aggregated to ``every`` when given.

    The files of one symbol must be of one kind and interval and given in time order. The symbol
    comes from each file's name unless ``symbol`` is given. Several symbols: one frame, sorted by
    symbol then open time (the ``symbol`` column tells them apart).
    """
    groups: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        groups.setdefault(symbol or _symbol_of(path), []).append(path)
    if not groups:
        raise UserError("no files given")
    frames = [_bars_of(sym, files, interval_ms(interval), every) for sym, files in sorted(groups.items())]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def ingest(paths: Iterable[str | Path], *, store: StoreLike = None, interval: Interval = "10s",
           symbol: str | None = None) -> list[IngestResult]:
    """Import Binance public data files into the store (this is ``dope ingest``): trades aggregated at
    ``interval``, klines at their own interval."""
    return ingest_files(open_store(store), list(paths), interval_ms(interval), symbol=symbol)


def bars_interval(bars: pd.DataFrame) -> int:
    """The interval of a bar frame in ms, from its ``close_time - open_time + 1`` (the same on every row).

    >>> bars_interval(pd.DataFrame({"open_time": [0, 60_000], "close_time": [59_999, 119_999]}))
    60000
    """
    spans = (bars["close_time"] - bars["open_time"] + 1).unique()
    if len(spans) != 1:
        raise UserError(f"bars of mixed or unknown interval (close_time - open_time + 1: {sorted(spans)[:3]})")
    return int(spans[0])


def _symbol_of(path: Path) -> str:
    found = detect_file(path).symbol
    if found is None:
        raise UserError(f"{path}: cannot tell the symbol from the file name; give symbol=")
    return found


def _bars_of(symbol: str, files: list[Path], interval: int, every: Interval | None) -> pd.DataFrame:
    kinds = {detect_file(p).layout == "klines" for p in files}
    if len(kinds) > 1:
        raise UserError(f"{symbol}: give either klines or trades files, not both")
    frame, stored = _from_klines(symbol, files) if kinds == {True} else (_from_trades(symbol, files, interval),
                                                                         interval)
    wanted = interval_ms(every, "every") if every is not None else stored
    if wanted % stored:
        raise UserError(f"every {every} is not a multiple of the files' interval {stored} ms")
    return frame if wanted == stored else resample_bars(frame, stored, wanted)


def _from_klines(symbol: str, files: list[Path]) -> tuple[pd.DataFrame, int]:
    klines = [read_klines(p, symbol=symbol) for p in files]
    intervals = {k.interval_ms for k in klines}
    if len(intervals) > 1:
        raise UserError(f"{symbol}: klines files of different intervals {sorted(intervals)} ms")
    frame = pd.concat([k.frame for k in klines], ignore_index=True)
    frame = frame.drop_duplicates("open_time", keep="last").sort_values("open_time", kind="stable")
    return frame.reset_index(drop=True), intervals.pop()


def _from_trades(symbol: str, files: list[Path], interval: int) -> pd.DataFrame:
    stream = ChunkedBars(symbol, interval)
    parts = [stream.feed(trades) for path in files for trades in iter_trades(path)]
    parts.append(stream.finish())
    filled = [p for p in parts if len(p)]
    return pd.concat(filled, ignore_index=True) if filled else parts[-1]
