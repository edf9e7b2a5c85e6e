"""The collector: bars to bus and store, bad trades rejected and counted, late trades reported."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pandas as pd
import pytest

from dope.bars import build_bars
from dope.config import BarsConfig, CollectorConfig, with_overrides
from dope.messages import Bar, LateTrades, Trade
from dope.services.collector import Collector
from dope.store import BarStore
from dope.transport import InMemoryBus
from tests.bars_helpers import arrays_of, messages_of, read_trades_csv
from tests.conftest import bundled_trades_file


class ListSource:
    """A source yielding fixed batches, honouring resume (trades before it are skipped)."""

    def __init__(self, batches: list[list[Trade]]) -> None:
        self.batches = batches
        self.counters: dict[str, int] = {}
        self.is_live = False

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        for batch in self.batches:
            yield [t for t in batch if t.event_time >= resume.get(t.symbol, 0)]


def collector(tmp_path: Path, batches: list[list[Trade]], bus: InMemoryBus | None = None,
              symbols: tuple[str, ...] = ("BTCUSDT",), flush: int = 3) -> Collector:
    return Collector(CollectorConfig(symbols=symbols, flush_every_bars=flush), BarsConfig(close_on="event_time"),
                     ListSource(batches), BarStore(tmp_path / "store"),
                     bus.publisher("collector") if bus else None)


def real_trades() -> list[Trade]:
    return messages_of(arrays_of(read_trades_csv(bundled_trades_file("BTCUSDT"))), "BTCUSDT")


def test_bars_reach_the_store_and_the_bus(tmp_path: Path) -> None:
    trades = real_trades()
    bus = InMemoryBus(hwm=0)
    sub = bus.subscriber(["bar."])
    asyncio.run(collector(tmp_path, [trades[i:i + 500] for i in range(0, len(trades), 500)], bus).run())
    expected = build_bars(arrays_of(read_trades_csv(bundled_trades_file("BTCUSDT"))), "BTCUSDT", 10_000)
    stored = BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000)
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), expected, check_exact=True)
    received = []
    while (msg := sub.receive(timeout_ms=0)) is not None:
        received.append(msg)
    assert [m.open_time for m in received if isinstance(m, Bar)] == expected["open_time"].tolist()
    assert sub.stats.total_gaps == 0


def test_bad_trades_are_rejected_counted_and_the_rest_goes_on(tmp_path: Path) -> None:
    good = real_trades()[:2000]
    bad = [
        good[5].__replace__(price=math.nan), good[6].__replace__(price=-1.0), good[7].__replace__(qty=math.inf),
        good[8].__replace__(symbol="DOGEUSDT"), good[9].__replace__(price=0.0),
    ]
    run = collector(tmp_path, [good[:1000], bad, good[1000:]])
    counters = asyncio.run(run.run())
    assert counters.problems == {"bad_price": 3, "bad_qty": 1, "unknown_symbol": 1}
    assert counters.trades == 2000
    clean = collector(tmp_path / "clean", [good])
    asyncio.run(clean.run())
    pd.testing.assert_frame_equal(BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000),
                                  BarStore(tmp_path / "clean" / "store").read_bars("BTCUSDT", 10_000))


def test_late_trade_is_published_and_counted(tmp_path: Path) -> None:
    trades = real_trades()[:3000]
    late = trades[10].__replace__(trade_id=1, event_time=trades[0].event_time)
    bus = InMemoryBus(hwm=0)
    sub = bus.subscriber(["late_trades."])
    counters = asyncio.run(collector(tmp_path, [trades, [late]], bus).run())
    assert counters.late_trades == 1 and counters.problems == {"late_trade": 1}
    message = sub.receive(timeout_ms=100)
    assert isinstance(message, LateTrades) and message.bar_open_time == trades[0].event_time // 10_000 * 10_000


def test_restart_resumes_after_the_last_stored_bar(tmp_path: Path) -> None:
    trades = real_trades()
    first = collector(tmp_path, [trades[:7000]])
    asyncio.run(first.run(stop=None))
    stored = BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000)
    second = collector(tmp_path, [trades])
    assert second.resume_points() == {"BTCUSDT": int(stored["open_time"].iloc[-1]) + 10_000}
    asyncio.run(second.run())
    expected = build_bars(arrays_of(read_trades_csv(bundled_trades_file("BTCUSDT"))), "BTCUSDT", 10_000)
    # the first run flushed its last, partial bar at the end of its (short) stream; the second
    # resumed after it, so that one bar holds only the first run's trades: the cut is visible
    # exactly there and nowhere else.
    got = BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000)
    cut = int(stored["open_time"].iloc[-1])
    assert got["open_time"].tolist() == expected["open_time"].tolist()
    same = got["open_time"] != cut
    pd.testing.assert_frame_equal(got[same].reset_index(drop=True), expected[same].reset_index(drop=True))


def test_live_start_without_history_begins_at_the_current_window(tmp_path: Path) -> None:
    from dope.clock import SimulatedClock

    run = Collector(CollectorConfig(symbols=("BTCUSDT", "ETHUSDT")), BarsConfig(), ListSource([]),
                    BarStore(tmp_path / "store"), clock=SimulatedClock(1_723_161_254_321))
    assert run.resume_points() == {"BTCUSDT": 1_723_161_250_000, "ETHUSDT": 1_723_161_250_000}


class QuietLiveSource:
    """One trade, then silence; ``is_live`` as the test sets it."""

    def __init__(self, trade: Trade, is_live: bool) -> None:
        self.trade, self.is_live = trade, is_live
        self.counters: dict[str, int] = {}

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        yield [self.trade]
        await asyncio.Event().wait()


def run_quiet_live(tmp_path: Path, is_live: bool) -> int:
    from dope.clock import SimulatedClock

    trade = real_trades()[0]
    clock = SimulatedClock(trade.event_time)

    async def main() -> int:
        run = Collector(CollectorConfig(symbols=("BTCUSDT",)), BarsConfig(grace_ms=1_000),
                        QuietLiveSource(trade, is_live), BarStore(tmp_path / str(is_live)), clock=clock)
        stop = asyncio.Event()
        task = asyncio.create_task(run.run(stop))
        while clock.now_ms() < trade.event_time + 60_000:
            await asyncio.sleep(0.001)
        stop.set()
        return (await asyncio.wait_for(task, 5)).bars

    return asyncio.run(main())


def test_quiet_bars_close_on_the_clock_only_while_the_source_is_live(tmp_path: Path) -> None:
    assert run_quiet_live(tmp_path, is_live=False) == 0
    assert run_quiet_live(tmp_path, is_live=True) >= 5


class FailingSource(ListSource):
    """Yields its batches, then raises as a broken feed does."""

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        async for batch in super().trades(resume):
            yield batch
        raise ConnectionError("feed broke")


def test_closed_bars_reach_the_store_when_the_source_raises(tmp_path: Path) -> None:
    trades = real_trades()[:3000]
    bus = InMemoryBus(hwm=0)
    sub = bus.subscriber(["bar."])
    run = Collector(CollectorConfig(symbols=("BTCUSDT",), flush_every_bars=1_000), BarsConfig(close_on="event_time"),
                    FailingSource([trades]), BarStore(tmp_path / "store"), bus.publisher("collector"))
    with pytest.raises(ConnectionError):
        asyncio.run(run.run())
    published = []
    while (msg := sub.receive(timeout_ms=0)) is not None:
        published.extend([msg.open_time] if isinstance(msg, Bar) else [])
    assert len(published) >= 5
    assert BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000)["open_time"].tolist() == published


def test_a_cold_replay_counts_and_logs_its_warm_up_bars(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trades = real_trades()
    cold = Collector(CollectorConfig(symbols=("BTCUSDT",)), BarsConfig(close_on="event_time"),
                     ListSource([trades[:7000]]), BarStore(tmp_path / "store"), warmup_bars=10)
    with caplog.at_level("INFO", logger="dope.collector"):
        assert asyncio.run(cold.run()).warmup_bars == 9
    assert "BTCUSDT: the first 9 bars are feature warm-up" in caplog.text
    warm = Collector(CollectorConfig(symbols=("BTCUSDT",)), BarsConfig(close_on="event_time"),
                     ListSource([trades]), BarStore(tmp_path / "store"), warmup_bars=10)
    counters = asyncio.run(warm.run())
    assert counters.bars > 10 and counters.warmup_bars == 0


def test_the_warm_up_comes_from_the_feature_set_and_live_binance_backfills_it() -> None:
    from dope.config import DopeConfig
    from dope.services.collector import collector_of
    from dope.services.featurizer import feature_set_of_config

    replay = DopeConfig()
    live = with_overrides(replay, {"collector": {"source": "binance"}})
    raw = with_overrides(live, {"binance": {"stream": "trade"}})
    assert feature_set_of_config(replay).warmup == 121
    assert (collector_of(replay, None).warmup_bars, collector_of(replay, None).backfill_warmup) == (121, False)
    assert (collector_of(live, None).warmup_bars, collector_of(live, None).backfill_warmup) == (121, True)
    assert not collector_of(raw, None).backfill_warmup  # /api/v3/trades only holds the last 1,000 trades


def test_collect_command_summary_has_the_warm_up_and_the_source_counters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dope.cli import main

    assert main(["collect", "--no-bus", "--store", str(tmp_path), "--symbols", "BTCUSDT"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.search(r"into (\d+) bars \(0 empty, (\d+) feature warm-up\)", line)
    assert match is not None and match[1] == match[2] and int(match[1]) > 10, line  # the bundled file is < 121 bars
    assert line.endswith("problems: none; source: duplicates 0, bad_rows 0"), line


def test_live_start_reaches_back_over_the_feature_warm_up(tmp_path: Path) -> None:
    """Nothing stored, or a store too short for the warm-up: start the warm-up back; else after the store."""
    from dope.clock import SimulatedClock

    now = 1_723_161_254_321
    window = now // 10_000 * 10_000
    bars = build_bars(arrays_of(read_trades_csv(bundled_trades_file("BTCUSDT"))), "BTCUSDT", 10_000)

    def live(store: Path) -> Collector:
        return Collector(CollectorConfig(symbols=("BTCUSDT",)), BarsConfig(), ListSource([]), BarStore(store),
                         clock=SimulatedClock(now), warmup_bars=10, backfill_warmup=True)

    def store_bars(store: Path, bars_back: int, count: int) -> None:
        """``count`` stored bars, the first ``bars_back`` bars before the current window."""
        frame = bars.head(count).assign(open_time=[window - (bars_back - i) * 10_000 for i in range(count)])
        BarStore(store).write_bars(frame.assign(close_time=frame["open_time"] + 9_999), 10_000)

    assert live(tmp_path / "empty").resume_points() == {"BTCUSDT": window - 9 * 10_000}
    store_bars(tmp_path / "short", 3, 2)  # an earlier run of two bars, one bar missed since
    assert live(tmp_path / "short").resume_points() == {"BTCUSDT": window - 9 * 10_000}
    store_bars(tmp_path / "full", 12, 11)  # the whole warm-up stored, one bar missed since
    assert live(tmp_path / "full").resume_points() == {"BTCUSDT": window - 10_000}
    store_bars(tmp_path / "stale", 100, 3)  # resumes after it: the backfill covers the warm-up
    assert live(tmp_path / "stale").resume_points() == {"BTCUSDT": window - 97 * 10_000}


class SlowToCloseSource(ListSource):
    """Yields its batches, then waits; closing it takes long (a websocket close that hangs)."""

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        try:
            async for batch in super().trades(resume):
                yield batch
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(60)


def test_a_stop_stores_the_closed_bars_before_the_source_winds_down(tmp_path: Path) -> None:
    """SIGTERM sets ``stop``: the bars are in the store at once, even if the source then takes long to close
    (a supervisor's SIGKILL after its stop timeout loses nothing)."""
    async def main() -> tuple[int, int]:
        run = Collector(CollectorConfig(symbols=("BTCUSDT",), flush_every_bars=1_000),
                        BarsConfig(close_on="event_time"), SlowToCloseSource([real_trades()[:3000]]),
                        BarStore(tmp_path / "store"))
        stop = asyncio.Event()
        task = asyncio.create_task(run.run(stop))
        while run.counters.trades < 3000:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.sleep(0.3)
        stored = len(BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return stored, run.counters.bars
    stored, published = asyncio.run(main())
    assert published >= 5 and stored == published


def test_a_collector_waiting_for_its_subscribers_heartbeats_meanwhile(tmp_path: Path) -> None:
    """``dope up``'s collector holds its first trade until every bar reader subscribed; it must not look dead
    meanwhile (a silent start is what the supervisor reports as a hung service)."""
    import threading
    import time

    from dope.config import BusConfig
    from dope.messages import Heartbeat
    from dope.services.collector import CollectorService
    from dope.transport import ZmqPublisher, open_subscriber

    publisher = ZmqPublisher("tcp://127.0.0.1:*", "collector")
    run = collector(tmp_path, [real_trades()])
    run.publisher, run.heartbeat_ms = publisher, 100
    service = CollectorService("collector", run, publisher, wait_subscribers=3)  # the watcher subscribes twice
    thread = threading.Thread(target=lambda: asyncio.run(service.run(asyncio.Event())))
    with open_subscriber(BusConfig(), ["heartbeat.", "bar."], endpoints=[publisher.endpoint]) as watcher:
        thread.start()
        kinds: list[str] = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            msg = watcher.receive(timeout_ms=100)
            if msg is not None:
                kinds.append(type(msg).__name__)
        with open_subscriber(BusConfig(), ["bar."], endpoints=[publisher.endpoint]):
            thread.join(timeout=30)
    publisher.close()
    assert not thread.is_alive()
    assert kinds.count(Heartbeat.__name__) >= 5, f"silent while waiting for the second subscriber: {kinds}"
    assert Bar.__name__ not in kinds, "a trade went out before every subscriber was there"
