"""The collector service: trades from a source -> bars -> the bus and the store.

It is a thin loop around the shared pieces: a ``TradeSource``, one
``BarBuilder`` per symbol, a ``Publisher`` and a ``BarStore``. On start it
asks the store for the last bar of each symbol and resumes right after it, so
a collector killed at any moment and restarted ends with exactly the bars of an
uninterrupted run: the source replays (or backfills) what was missed and the
store's upserts make re-written bars harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dope.bars import BarBuilder, align, bars_to_frame
from dope.clock import Clock
from dope.config import BarsConfig, CollectorConfig, DopeConfig
from dope.logs import ProblemCounter
from dope.market.base import TradeSource, trade_problem
from dope.messages import Bar, LateTrades, Trade
from dope.store import BarStore
from dope.transport import Publisher

log = logging.getLogger("dope.collector")

BarSink = Callable[[Bar], None]
REPLAY_FLUSH_S = 1.0


@dataclass
class CollectorCounters:
    """What the collector did, for heartbeats and for tests."""

    trades: int = 0
    bars: int = 0
    empty_bars: int = 0
    late_trades: int = 0
    flushes: int = 0
    warmup_bars: int = 0
    """Bars published before the features can be warm (no prediction for them)."""
    problems: dict[str, int] = field(default_factory=dict)
    source: dict[str, int] = field(default_factory=dict)
    """The source's own counters (malformed, duplicates, out of order, gaps ...) at the end."""

    def as_dict(self) -> dict[str, int]:
        return {"trades": self.trades, "bars": self.bars, "empty_bars": self.empty_bars,
                "late_trades": self.late_trades, "flushes": self.flushes, "warmup_bars": self.warmup_bars,
                **self.problems}


class Collector:
    """Runs one source into bars for the configured symbols.

    ``warmup_bars`` is the feature set's warm-up (bars a featurizer needs for its first vector; 0:
    not tracked): the bars published before a symbol has that history are counted and logged as
    warm-up. ``backfill_warmup`` (a live source that backfills by time) starts a symbol whose store
    does not hold that history that many bars back, so the first live bar is already warm.
    """

    def __init__(self, collector: CollectorConfig, bars: BarsConfig, source: TradeSource, store: BarStore,
                 publisher: Publisher | None = None, *, clock: Clock | None = None,
                 on_bar: BarSink | None = None, heartbeat_ms: int = 1_000, warmup_bars: int = 0,
                 backfill_warmup: bool = False) -> None:
        self.config = collector
        self.bar_policy = bars
        self.interval_ms = bars.interval_ms
        self.source = source
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.on_bar = on_bar
        self.heartbeat_ms = heartbeat_ms
        self.counters = CollectorCounters()
        self.problems = ProblemCounter(log)
        self.warmup_bars = warmup_bars
        self.backfill_warmup = backfill_warmup
        self.builders = {symbol: self._resumed_builder(symbol) for symbol in collector.symbols}
        self._pending: list[Bar] = []
        self._warmup_left: dict[str, int] = {}
        self._flushed_at = time.monotonic()

    def resume_points(self) -> dict[str, int]:
        """First trade time still needed per symbol: right after its last stored bar.

        A symbol with nothing stored starts, on a live source (one with a clock),
        at the start of the current window, so that its first bar is whole (the
        source backfills the trades already in it), or with ``backfill_warmup`` the
        warm-up before it (see :meth:`_start_live`); on a replay it is left out and
        starts where the recording starts."""
        if self.clock is not None:
            self._start_live(align(self.clock.now_ms(), self.interval_ms))
        resume = {symbol: builder.next_open_time for symbol, builder in self.builders.items()
                  if builder.next_open_time is not None}
        self._plan_warmup(resume)
        return resume

    def _start_live(self, now_window: int) -> None:
        """Start each symbol so that the warm-up before ``now_window`` is backfilled (when asked).

        Nothing stored: start at the warm-up's first bar. A store that ends within the warm-up
        but does not reach back to its start (a short earlier run): rebuild from the warm-up's
        first bar (the stored bars are rewritten identical). A store that ends before the warm-up
        (stale): resume after it, as always, which backfills the warm-up too."""
        back = max(0, self.warmup_bars - 1) if self.backfill_warmup else 0
        warm_start = now_window - back * self.interval_ms
        for symbol, builder in self.builders.items():
            resume = builder.next_open_time
            if resume is None:
                builder.next_open_time = warm_start
                if back:
                    log.info("%s: nothing stored; starting %d bars back to backfill the feature warm-up",
                             symbol, back)
            elif warm_start < resume:
                held = len(self.store.read_bars(symbol, self.interval_ms, warm_start, resume))
                if held < (resume - warm_start) // self.interval_ms:
                    log.info("%s: the store holds %d of the %d bars before the current one; rebuilding the "
                             "feature warm-up from %d", symbol, held, back, warm_start)
                    builder.next_open_time, builder.last_close = warm_start, None

    def _plan_warmup(self, resume: dict[str, int]) -> None:
        """How many of each symbol's first bars are feature warm-up, given the bars stored before them."""
        needed = max(0, self.warmup_bars - 1)
        for symbol in self.builders:
            start = resume.get(symbol)
            held = 0 if start is None or not needed else len(
                self.store.read_bars(symbol, self.interval_ms, start - needed * self.interval_ms, start))
            self._warmup_left[symbol] = needed - held
            if needed > held:
                log.info("%s: the first %d bars are feature warm-up (the store holds %d of the %d bars a "
                         "featurizer needs before them)", symbol, needed - held, held, needed)

    async def run(self, stop: asyncio.Event | None = None) -> CollectorCounters:
        """Consume the source until it ends or ``stop`` is set; flush everything complete.

        The bars already closed reach the store on every exit path: a normal end, a stop
        (SIGTERM), a source that raises and a cancelled task."""
        stop = stop or asyncio.Event()
        tickers = [asyncio.create_task(self._heartbeats(stop))]
        if self.clock is not None and self.bar_policy.close_on == "clock":
            tickers.append(asyncio.create_task(self._clock_closes(self.clock, stop)))
        finished = False
        try:
            finished = await self._consume(stop)
        finally:
            stop.set()
            for task in tickers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._close(finished)
        return self.counters

    async def _consume(self, stop: asyncio.Event) -> bool:
        """Feed the source's batches in until it ends (True) or ``stop`` is set (False).

        Waiting for the next batch races the stop event, so a stop takes effect at
        once even when the source is quiet (a live feed waiting on the network)."""
        stream = self.source.trades(self.resume_points())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                batch = asyncio.ensure_future(anext(stream))
                await asyncio.wait({batch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not batch.done():
                    self.flush_to_store()  # stored before the source winds down (which may be slow)
                    batch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await batch
                    return False
                try:
                    self.ingest(batch.result())
                except StopAsyncIteration:
                    return True
        finally:
            stopping.cancel()
            self.flush_to_store()
            close = getattr(stream, "aclose", None)  # async generators: release the source now
            if close is not None:
                await close()

    def ingest(self, trades: Iterable[Trade]) -> None:
        """Fold a batch of trades into the bars; bars that close are published and queued for the store."""
        for trade in trades:
            builder = self.builders.get(trade.symbol)
            problem = trade_problem(trade) if builder is not None else "unknown_symbol"
            if problem is not None:
                self.problems.report(problem, f"rejected trade {trade.trade_id} of {trade.symbol!r}: {problem}")
                continue
            assert builder is not None
            self.counters.trades += 1
            self._emit(builder.add(trade))

    def _emit(self, bars: list[Bar]) -> None:
        for bar in bars:
            self.counters.bars += 1
            self.counters.empty_bars += bar.empty
            if self._warmup_left.get(bar.symbol, 0) > 0:
                self._warmup_left[bar.symbol] -= 1
                self.counters.warmup_bars += 1
            if self.publisher is not None:
                self.publisher.publish(bar)
            if self.on_bar is not None:
                self.on_bar(bar)
            self._pending.append(bar)
        if self._flush_due():
            self.flush_to_store()

    def _flush_due(self) -> bool:
        """``flush_every_bars`` are waiting; for a replayed or synthetic source (no clock), which can be
        read again after a crash, also ``REPLAY_FLUSH_S`` since the last write: a write costs tens of ms
        whatever its size, so a full-speed replay makes few large ones (the bars written are the same)."""
        if len(self._pending) < self.config.flush_every_bars:
            return False
        return self.clock is not None or time.monotonic() - self._flushed_at >= REPLAY_FLUSH_S

    def flush_to_store(self) -> None:
        """Write the bars not yet stored (idempotent upsert)."""
        if not self._pending:
            return
        self.store.write_bars(bars_to_frame(self._pending), self.interval_ms)
        self._flushed_at = time.monotonic()
        self._pending.clear()
        self.counters.flushes += 1

    def _close(self, source_ended: bool) -> None:
        """At the end of a finite source every open window is complete: emit it. On a stop, only store."""
        if source_ended:
            for builder in self.builders.values():
                self._emit(builder.flush())
        self.flush_to_store()
        self.counters.problems = dict(self.problems.counts)
        self.counters.late_trades = sum(b.late_trades for b in self.builders.values())
        self.counters.source = dict(self.source.counters)
        self.send_heartbeat()
        log.info("collector done: %s; source: %s", self.counters.as_dict(), self.counters.source)

    def _resumed_builder(self, symbol: str) -> BarBuilder:
        last = self.store.last_bar(symbol, self.interval_ms)
        policy = self.bar_policy
        builder = BarBuilder(symbol, self.interval_ms, grace_ms=policy.grace_ms, emit_empty=policy.emit_empty,
                             on_late=self._on_late)
        if last is not None:
            builder.next_open_time = int(last["open_time"]) + self.interval_ms
            builder.last_close = float(last["close"])
            log.info("%s: resuming after the stored bar at %d", symbol, int(last["open_time"]))
        return builder

    def _on_late(self, trade: Trade, open_time: int) -> None:
        self.problems.report("late_trade", f"{trade.symbol}: trade {trade.trade_id} at {trade.event_time} "
                                           f"is late (bars before {open_time} are closed)")
        if self.publisher is not None:
            self.publisher.publish(LateTrades(
                symbol=trade.symbol, event_time=trade.event_time, interval_ms=self.interval_ms,
                bar_open_time=align(trade.event_time, self.interval_ms), count=1, volume=trade.qty))

    async def _clock_closes(self, clock: Clock, stop: asyncio.Event) -> None:
        """Close quiet bars on the clock (live mode): a bar is due at its end plus the grace period.

        Only while the source is live: during a reconnect and its backfill the missing
        trades are still coming, so bars wait for them (event time) instead of closing empty."""
        tick = max(self.interval_ms // 10, 100)
        while not stop.is_set():
            await clock.sleep_until(clock.now_ms() + tick)
            if not self.source.is_live:
                continue
            for builder in self.builders.values():
                if builder.next_open_time is not None:
                    self._emit(builder.advance(clock.now_ms()))

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.send_heartbeat()
            await asyncio.sleep(self.heartbeat_ms / 1000)

    def send_heartbeat(self) -> None:
        if self.publisher is not None:
            self.counters.problems = dict(self.problems.counts)
            self.publisher.heartbeat(self.counters.as_dict())


class CollectorService:
    """The collector as a process (``python -m dope.services.collector``): its own publisher and store.

    ``wait_subscribers`` > 0 holds the first trade until that many subscriptions reached the
    publisher (``dope up`` sets it, so a replay's first bars reach every service).
    """

    def __init__(self, name: str, collector: Collector, publisher: Any, wait_subscribers: int = 0) -> None:
        self.name = name
        self.collector = collector
        self.publisher = publisher
        self.wait_subscribers = wait_subscribers
        self._last_wait_beat = -float("inf")

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the subscribers if asked, then collect until the source ends or ``stop``."""
        if self.wait_subscribers:
            from dope.services.base import wait_for_subscribers

            wait_for_subscribers(self.publisher, self.wait_subscribers, on_tick=self._heartbeat_while_waiting)
        await self.collector.run(stop)

    def _heartbeat_while_waiting(self) -> None:
        """A heartbeat every ``heartbeat_ms`` while the first trade waits for the subscribers."""
        now = time.monotonic()
        if now - self._last_wait_beat >= self.collector.heartbeat_ms / 1000:
            self._last_wait_beat = now
            self.collector.send_heartbeat()

    def close(self) -> None:
        self.publisher.close()


def collector_of(config: DopeConfig, publisher: Publisher | None, *, on_bar: BarSink | None = None,
                 flow_controlled: bool = False) -> Collector:
    """The collector of ``config``: its source, its store, and the live feature set's warm-up.

    ``flow_controlled`` (under ``dope up``): a replayed source waits for the trader's decisions as credit."""
    from dope.services.featurizer import feature_set_of_config
    from dope.services.sources import backfills_history, open_source

    source, clock = open_source(config)
    if flow_controlled:
        from dope.services.flow import with_flow_control

        source = with_flow_control(config, source)
    collector = Collector(config.collector, config.bars, source, BarStore(config.store.path), publisher,
                          clock=clock, on_bar=on_bar, heartbeat_ms=config.bus.heartbeat_ms,
                          warmup_bars=feature_set_of_config(config).warmup,
                          backfill_warmup=config.collector.warmup_backfill and backfills_history(config))
    hold = getattr(source, "hold", None)
    if hold is not None:  # held by the loop trainer: the bars it will fit on are in the store by then
        hold.on_hold = collector.flush_to_store
    return collector


def build(config: DopeConfig, **overrides: Any) -> CollectorService:
    """The collector of ``config`` on its configured source, publishing on ``services.collector``."""
    from dope.services.base import endpoint_of
    from dope.transport import open_publisher

    name = overrides.get("name") or config.collector.service_name
    publisher = open_publisher(config.bus, name, endpoint=endpoint_of(config, "collector"))
    collector = collector_of(config, publisher, flow_controlled=bool(overrides.get("wait_subscribers")))
    return CollectorService(name, collector, publisher, int(overrides.get("wait_subscribers", 0)))


def main(argv: list[str] | None = None) -> int:
    """``python -m dope.services.collector --config FILE [--wait-subscribers N]``."""
    from dope.services.base import service_main

    def arguments(parser: Any) -> None:
        parser.add_argument("--wait-subscribers", type=int, help="hold the source until N subscriptions arrived")

    return service_main(build, argv, prog="dope.services.collector", add_arguments=arguments,
                        default_name="collector")


if __name__ == "__main__":
    raise SystemExit(main())
