"""Replay of recorded trades (Binance public data files) and of DOPE's own stored bars, at any speed.

``speed`` 0 replays as fast as possible; 1 in real time; N at N times real time. Pacing goes
through a :class:`dope.clock.ScaledClock` over ``clock`` (the wall clock, ``LiveClock`` by default),
so tests pass a ``SimulatedClock`` and never sleep. A trade (or bar) is handed out only once the
replay clock has reached its time: replay never looks ahead.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from dope.bars.schema import bars_from_frame
from dope.clock import Clock, ScaledClock
from dope.errors import UserError
from dope.market.base import UnknownSymbolError
from dope.market.config import ReplayConfig
from dope.messages import Bar, Trade
from dope.store.bars import BarStore
from dope.store.files import BadRows, FileInfo, ReadStats, detect_file, iter_trades, take_trades
from dope.types import DAY_MS

REPLAY_CHUNK_ROWS: Final = 100_000


class ReplaySource:
    """A ``TradeSource`` replaying trades/aggTrades files, merged across symbols in event-time order.

    >>> import asyncio
    >>> from dope.clock import SimulatedClock
    >>> path = next(p for p in bundled_trade_files() if p.name.startswith("BTCUSDT"))
    >>> async def first_batch():
    ...     source = ReplaySource([path], ["BTCUSDT"], batch_size=3)
    ...     async for batch in source.trades({}):
    ...         return [t.trade_id for t in batch]
    >>> asyncio.run(first_batch())
    [3735683259, 3735683260, 3735683261]
    """

    is_live = False
    """Replayed history: bars close on event time, never on the wall clock."""

    def __init__(self, files: Sequence[str | Path] | None, symbols: Sequence[str] | None = None, *,
                 speed: float = 0.0, clock: Clock | None = None, store: BarStore | None = None,
                 batch_size: int = 1000, on_bad: BadRows = "raise", chunk_rows: int = REPLAY_CHUNK_ROWS) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.speed = speed
        self.clock = clock
        self.store = store
        self.batch_size = batch_size
        self.on_bad: BadRows = on_bad
        self.chunk_rows = chunk_rows
        self.counters: dict[str, int] = {"trades": 0, "batches": 0, "skipped_resume": 0, "duplicates": 0,
                                         "bad_rows": 0}
        self.symbols = list(symbols or [])
        self._files = self._select(list(files or []))

    @classmethod
    def from_config(cls, config: ReplayConfig, symbols: Sequence[str], *, clock: Clock | None = None,
                    store: BarStore | None = None) -> ReplaySource:
        """A replay source as ``[replay]`` describes it (no files: the real trades bundled with DOPE)."""
        paths = [Path(f) for f in config.files] or bundled_trade_files()
        return cls(paths, symbols, speed=config.speed, clock=clock, store=store,
                   batch_size=config.batch_size, on_bad="skip" if config.skip_bad_rows else "raise")

    def _select(self, files: list[str | Path]) -> list[tuple[str, FileInfo]]:
        """``(symbol, info)`` of the files of the wanted symbols; every wanted symbol must have one."""
        chosen: list[tuple[str, FileInfo]] = []
        for path in files:
            info = detect_file(path)
            if info.layout == "klines":
                raise UserError(f"{info.path}: holds klines; replay needs trades or aggTrades files")
            symbol = info.symbol or (self.symbols[0] if len(self.symbols) == 1 else None)
            if symbol is None:
                raise UserError(f"{info.path}: cannot tell the symbol from the file name")
            if not self.symbols or symbol in self.symbols:
                chosen.append((symbol, info))
        missing = set(self.symbols) - {s for s, _ in chosen}
        if files and missing:
            raise UnknownSymbolError(f"no replay file for symbol(s) {', '.join(sorted(missing))}")
        self.symbols = self.symbols or sorted({s for s, _ in chosen})
        return chosen

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        """Batches of trades, oldest first, skipping those before ``resume[symbol]``."""
        if not self._files:
            raise UserError("no trade files to replay (the store holds bars: use bars() to replay it)")
        pacer = _Pacer(self.speed, self.clock)
        batch: list[Trade] = []
        for trade in self._merged(resume):
            if pacer.must_wait(trade.event_time) and batch:
                yield self._count(batch)
                batch = []
            await pacer.wait_for(trade.event_time)
            batch.append(trade)
            if len(batch) >= self.batch_size:
                yield self._count(batch)
                batch = []
                await asyncio.sleep(0)
        if batch:
            yield self._count(batch)

    def bars(self, interval_ms: int, resume: Mapping[str, int] | None = None, *, start_ms: int | None = None,
             end_ms: int | None = None) -> AsyncIterator[Bar]:
        """The stored bars of this source's symbols, in time order, at this source's speed."""
        if self.store is None:
            raise UserError("no store given to replay bars from")
        return replay_store_bars(self.store, self.symbols, interval_ms, start_ms=start_ms, end_ms=end_ms,
                                 resume=resume, speed=self.speed, clock=self.clock)

    def _count(self, batch: list[Trade]) -> list[Trade]:
        self.counters["trades"] += len(batch)
        self.counters["batches"] += 1
        return batch

    def _merged(self, resume: Mapping[str, int]) -> Iterator[Trade]:
        """Trades of all files in ``(time, symbol, trade id)`` order, duplicates counted and dropped."""
        rank = {symbol: i for i, symbol in enumerate(self.symbols)}
        streams = [self._file_trades(symbol, info, resume.get(symbol)) for symbol, info in self._files]
        last: dict[str, tuple[int, int]] = {}
        for trade in heapq.merge(*streams, key=lambda t: (t.event_time, rank[t.symbol], t.trade_id)):
            key = (trade.event_time, trade.trade_id)
            if trade.symbol in last and key <= last[trade.symbol]:
                self.counters["duplicates"] += 1
                continue
            last[trade.symbol] = key
            yield trade

    def _file_trades(self, symbol: str, info: FileInfo, resume_ms: int | None) -> Iterator[Trade]:
        stats = ReadStats()
        chunks = iter_trades(info.path, chunk_rows=self.chunk_rows, on_bad=self.on_bad, stats=stats, info=info)
        for chunk in chunks:
            arrays = chunk.sorted()
            if resume_ms is not None:
                keep = arrays.time >= resume_ms
                self.counters["skipped_resume"] += int((~keep).sum())
                arrays = take_trades(arrays, keep)
            yield from _to_trades(symbol, arrays.time, arrays.trade_id, arrays.price, arrays.qty,
                                  arrays.is_buyer_maker, arrays.first_trade_id, arrays.last_trade_id)
            self.counters["bad_rows"] += stats.skipped
            stats.skipped = 0


def bundled_trade_files() -> list[Path]:
    """The real Binance spot trade files shipped with DOPE (BTCUSDT and ETHUSDT, 11 minutes)."""
    return sorted(Path(str(p)) for p in files("dope.data").iterdir() if "-trades-" in p.name)


def _to_trades(symbol: str, *columns: np.ndarray) -> Iterator[Trade]:
    for time, trade_id, price, qty, maker, first, last in zip(*(c.tolist() for c in columns), strict=True):
        yield Trade(symbol=symbol, event_time=time, trade_id=trade_id, price=price, qty=qty,
                    is_buyer_maker=maker, first_trade_id=first, last_trade_id=last)


class _Pacer:
    """Holds events back until the replay clock reaches their time (no waiting at speed 0)."""

    def __init__(self, speed: float, wall: Clock | None) -> None:
        self.speed = speed
        self.wall = wall
        self.clock: ScaledClock | None = None
        self.horizon = -(2**63)

    def must_wait(self, time_ms: int) -> bool:
        """True when an event at ``time_ms`` is beyond what the replay clock has reached."""
        return self.speed > 0 and time_ms > self.horizon

    async def wait_for(self, time_ms: int, origin_ms: int | None = None) -> None:
        """Sleep (on the scaled clock) until ``time_ms`` has come; the replay starts at ``origin_ms``
        (default: the first event's time)."""
        if not self.must_wait(time_ms):
            return
        if self.clock is None:
            self.clock = ScaledClock(time_ms if origin_ms is None else origin_ms, self.speed, self.wall)
        await self.clock.sleep_until(time_ms)
        self.horizon = max(time_ms, self.clock.now_ms())


async def replay_store_bars(store: BarStore, symbols: Sequence[str], interval_ms: int, *,
                            start_ms: int | None = None, end_ms: int | None = None,
                            resume: Mapping[str, int] | None = None, speed: float = 0.0,
                            clock: Clock | None = None) -> AsyncIterator[Bar]:
    """Stored bars of ``symbols`` as ``Bar`` messages in ``(open_time, symbol)`` order, one UTC day in memory
    at a time. A bar is handed out when the replay clock reaches its end (``close_time + 1``); the replay
    clock starts at the first bar's open."""
    pacer = _Pacer(speed, clock)
    for frame in _store_days(store, symbols, interval_ms, start_ms, end_ms, resume or {}):
        for bar in bars_from_frame(frame, interval_ms):
            await pacer.wait_for(bar.close_time + 1, origin_ms=bar.open_time)
            yield bar
        await asyncio.sleep(0)


def _store_days(store: BarStore, symbols: Sequence[str], interval_ms: int, start_ms: int | None,
                end_ms: int | None, resume: Mapping[str, int]) -> Iterable[pd.DataFrame]:
    for symbol in symbols:
        if not store.day_files(symbol, interval_ms):
            raise UnknownSymbolError(f"no {symbol} bars at {interval_ms} ms in the store {store.root}")
    days = sorted({_day_start(f.parent.name) for s in symbols for f in store.day_files(s, interval_ms, start_ms,
                                                                                        end_ms)})
    rank = {symbol: i for i, symbol in enumerate(symbols)}
    for day in days:
        lo, hi = max(day, start_ms or day), min(day + DAY_MS, end_ms or day + DAY_MS)
        parts = [store.read_bars(s, interval_ms, max(lo, resume.get(s, lo)), hi) for s in symbols]
        frame = pd.concat(parts, ignore_index=True)
        order = np.lexsort((frame["symbol"].map(rank).to_numpy(), frame["open_time"].to_numpy()))
        yield frame.iloc[order].reset_index(drop=True)


def _day_start(folder_name: str) -> int:
    return int(pd.Timestamp(folder_name[len("date="):], tz="UTC").value // 1_000_000)
