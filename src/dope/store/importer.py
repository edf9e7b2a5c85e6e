"""Import of Binance public data files into the bar store (the engine behind ``dope ingest``).

Trades and aggTrades files are aggregated with :func:`dope.bars.build_bars`, chunk by chunk: the
trades of the last (possibly unfinished) window of a chunk are carried into the next, and empty
bars between chunks carry the previous close, so the bars equal one ``build_bars`` over the whole
file. The files of one symbol given together are one continuous stream (in file-name order).
Klines files are stored at their own interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from dope.bars.interval import align, format_interval
from dope.bars.schema import empty_bar_frame
from dope.bars.vectorized import TradeArrays, build_bars
from dope.errors import UserError
from dope.store.bars import BarStore
from dope.store.files import (
    DEFAULT_CHUNK_ROWS,
    BadRows,
    FileInfo,
    ReadStats,
    concat_trades,
    detect_file,
    iter_trades,
    read_klines,
    take_trades,
)


class ProgressBar(Protocol):
    """What the import reports progress to (a ``tqdm`` bar fits)."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


Progress = Callable[[FileInfo], ProgressBar]
"""Given a file about to be read, returns the bar that counts its rows."""


@dataclass
class IngestResult:
    """What one import did: the file, what it held and how many bars it stored."""

    path: Path
    layout: str
    symbol: str
    interval_ms: int
    rows: int = 0
    bars: int = 0
    stats: ReadStats = field(default_factory=ReadStats)

    def summary(self) -> str:
        """One line for the terminal."""
        skipped = f", {self.stats.skipped} bad rows skipped" if self.stats.skipped else ""
        return (f"{self.path.name}: {self.rows} {self.layout} rows -> {self.bars} {self.symbol} bars "
                f"({format_interval(self.interval_ms)}){skipped}")


class ChunkedBars:
    """Bars of one symbol from trades that arrive in time-ordered chunks, equal to one ``build_bars``."""

    def __init__(self, symbol: str, interval_ms: int) -> None:
        self.symbol = symbol
        self.interval_ms = interval_ms
        self._pending: TradeArrays | None = None
        self._next_open: int | None = None
        self._prev_close: float | None = None

    def feed(self, trades: TradeArrays) -> pd.DataFrame:
        """Add trades; return the bars of the windows they complete."""
        if self._pending is not None:
            trades = concat_trades([self._pending, trades])
        trades = trades.sorted()
        if len(trades) == 0:
            return empty_bar_frame(self.symbol)
        cut = align(int(trades.time[-1]), self.interval_ms)
        done = trades.time < cut
        self._pending = take_trades(trades, ~done)
        return self._build(take_trades(trades, done))

    def finish(self) -> pd.DataFrame:
        """The bars of the trades still pending (end of the stream)."""
        pending, self._pending = self._pending, None
        return self._build(pending) if pending is not None else empty_bar_frame(self.symbol)

    def _build(self, trades: TradeArrays) -> pd.DataFrame:
        if len(trades) == 0:
            return empty_bar_frame(self.symbol)
        if self._next_open is not None and int(trades.time[0]) < self._next_open:
            raise UserError(f"{self.symbol} trades go back in time (to {int(trades.time[0])} ms, after bars up "
                            f"to {self._next_open} ms were built): give each symbol's files in time order")
        bars = build_bars(trades, self.symbol, self.interval_ms, start_open_time=self._next_open,
                          prev_close=self._prev_close)
        if len(bars):
            self._next_open = int(bars["open_time"].iloc[-1]) + self.interval_ms
            self._prev_close = float(bars["close"].iloc[-1])
        return bars


def ingest_files(store: BarStore, paths: Iterable[str | Path], interval_ms: int, *, symbol: str | None = None,
                 on_bad: BadRows = "raise", chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 progress: Progress | None = None) -> list[IngestResult]:
    """Import files into ``store``: trades aggregated at ``interval_ms``, klines at their own interval."""
    infos = [detect_file(p) for p in paths]
    results: list[IngestResult] = []
    streams: dict[str, ChunkedBars] = {}
    for info in sorted(infos, key=lambda i: (i.layout == "klines", _symbol(i, symbol), i.path.name)):
        if info.layout == "klines":
            results.append(ingest_klines(store, info, symbol=symbol, on_bad=on_bad))
            continue
        sym = _symbol(info, symbol)
        stream = streams.setdefault(sym, ChunkedBars(sym, interval_ms))
        results.append(_ingest_trades(store, info, stream, on_bad, chunk_rows, progress))
    for stream in streams.values():
        tail = stream.finish()
        store.write_bars(tail, interval_ms)
        last = next(r for r in reversed(results) if r.symbol == stream.symbol and r.layout != "klines")
        last.bars += len(tail)
    return results


def _ingest_trades(store: BarStore, info: FileInfo, stream: ChunkedBars, on_bad: BadRows, chunk_rows: int,
                   progress: Progress | None) -> IngestResult:
    result = IngestResult(info.path, info.layout, stream.symbol, stream.interval_ms)
    bar = progress(info) if progress is not None else None
    try:
        for trades in iter_trades(info.path, chunk_rows=chunk_rows, on_bad=on_bad, stats=result.stats, info=info):
            result.rows += len(trades)
            result.bars += store.write_bars(stream.feed(trades), stream.interval_ms)
            if bar is not None:
                bar.update(len(trades))
    finally:
        if bar is not None:
            bar.close()
    return result


def ingest_klines(store: BarStore, info: FileInfo, *, symbol: str | None = None,
                  on_bad: BadRows = "raise") -> IngestResult:
    """Store a klines file's bars at their own interval."""
    sym = _symbol(info, symbol)
    stats = ReadStats()
    klines = read_klines(info.path, symbol=sym, on_bad=on_bad, stats=stats)
    bars = store.write_bars(klines.frame, klines.interval_ms)
    return IngestResult(info.path, "klines", sym, klines.interval_ms, stats.rows, bars, stats)


def _symbol(info: FileInfo, override: str | None) -> str:
    symbol = override or info.symbol
    if symbol is None:
        raise UserError(f"{info.path}: cannot tell the symbol from the file name; pass --symbol")
    return symbol
