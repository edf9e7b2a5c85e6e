"""The collector on the Binance source against the fake exchange: faults change no bar."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pandas as pd
import pytest

from dope.bars import align, bars_to_frame
from dope.clock import ScaledClock
from dope.config import BarsConfig, CollectorConfig
from dope.market.binance import BinanceSource
from dope.messages import Bar, Trade
from dope.services.collector import Collector
from dope.store import BarStore
from tests.fakes.binance import FakeBinance, FakeConfig, FaultPlan, StreamFaults
from tests.fakes.binance_faults import WAF_HTML
from tests.integration.test_binance_source import SYMBOLS, bars_vectorized, client_config, reference


class UntilLastTrade:
    """Wraps a live source and ends it once every symbol's last trade id has arrived."""

    def __init__(self, source: BinanceSource, last_ids: dict[str, int]) -> None:
        self.source, self.last_ids = source, last_ids
        self.counters = source.counters
        self.seen: dict[str, int] = {}

    @property
    def is_live(self) -> bool:
        return self.source.is_live

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        stream = self.source.trades(resume)
        try:
            async for batch in stream:
                yield batch
                for trade in batch:
                    self.seen[trade.symbol] = max(self.seen.get(trade.symbol, 0), trade.trade_id)
                if all(self.seen.get(s, 0) >= last for s, last in self.last_ids.items()):
                    return
        finally:
            await stream.aclose()


def seed_previous_bars(store: BarStore, open_time: int) -> None:
    """A stored bar before ``open_time + 10 s``, as a collector that ran earlier leaves: the restart resumes after it."""
    for symbol in SYMBOLS:
        bar = Bar(symbol=symbol, event_time=open_time + 9_999, interval_ms=10_000, open_time=open_time,
                  close_time=open_time + 9_999, open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0,
                  quote_volume=1.0, count=1, taker_buy_volume=0.0, taker_buy_quote_volume=0.0, vwap=1.0,
                  empty=False, first_trade_id=0, last_trade_id=0)
        store.write_bars(bars_to_frame([bar]), 10_000)


def collect_from_fake(store: Path, faults: FaultPlan | None) -> dict[str, int]:
    async def main() -> dict[str, int]:
        fake = FakeBinance(config=FakeConfig(speed=100, ping_interval_s=0.3, pong_timeout_s=1.0), faults=faults)
        start = align(fake.first_time_ms + 20_000, 10_000)
        fake.clock.step(start - fake.clock.now_ms())
        seed_previous_bars(BarStore(store), start - 10_000)
        async with fake:
            last_ids = {s: trades[-1].trade_id for s, trades in reference(fake, start).items()}
            source = UntilLastTrade(BinanceSource(client_config(fake), SYMBOLS, rng_seed=5), last_ids)
            collector = Collector(CollectorConfig(symbols=tuple(SYMBOLS), flush_every_bars=5),
                                  BarsConfig(close_on="event_time"), source, BarStore(store))
            await asyncio.wait_for(collector.run(), 60)
            return source.counters
    return asyncio.run(main())


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bars of a fault-free run (shared by the tests of this module)."""
    store = tmp_path_factory.mktemp("clean")
    assert collect_from_fake(store, None)["disconnects"] == 0
    return store


def assert_same_bars(got: Path, expected: Path) -> None:
    for symbol in SYMBOLS:
        reference = BarStore(expected).read_bars(symbol, 10_000)
        assert len(reference) >= 20
        pd.testing.assert_frame_equal(BarStore(got).read_bars(symbol, 10_000), reference, check_exact=True)


def test_waf_403_server_errors_and_html_answers_are_retried(tmp_path: Path, clean_store: Path) -> None:
    faults = FaultPlan()
    faults.fail_next_rest(403, path="/api/v3/exchangeInfo")
    faults.fail_next_rest(403, path="/api/v3/aggTrades", body=WAF_HTML)
    faults.fail_next_rest(503, path="/api/v3/aggTrades")
    faults.fail_next_rest(200, path="/api/v3/aggTrades", body=WAF_HTML)
    faults.fail_next_rest(502, path="/api/v3/aggTrades", body="<html><body>Bad Gateway</body></html>")
    counters = collect_from_fake(tmp_path, faults)
    assert (counters["forbidden"], counters["server_errors"], counters["bad_bodies"]) == (2, 2, 1)
    assert_same_bars(tmp_path, clean_store)


def test_collector_bars_with_faults_equal_the_fault_free_bars(tmp_path: Path, clean_store: Path) -> None:
    faults = FaultPlan(seed=9, streams=[
        StreamFaults(drop_after=60, duplicate_rate=0.1),
        StreamFaults(close_after=50, reorder_window=4, malformed={7: "garbage"}),
        StreamFaults(drop_after=70, duplicate_rate=0.1),
        StreamFaults(shutdown_after=40, malformed={3: "wrong_types"}),
        StreamFaults(drop_after=60, reorder_window=3),
    ], default=StreamFaults(duplicate_rate=0.05, reorder_window=3))
    faults.fail_next_rest(429, retry_after=1, path="/api/v3/aggTrades")
    faulty = collect_from_fake(tmp_path, faults)
    assert faulty["disconnects"] >= 5 and faulty["malformed"] == 2 and faulty["rate_limited"] == 1
    assert faulty["duplicates"] > 0
    assert_same_bars(tmp_path, clean_store)


def test_live_start_on_an_empty_store_backfills_the_warm_up_before_streaming(tmp_path: Path) -> None:
    """Nothing stored: the warm-up bars before the current window come from REST, then the stream goes on."""
    warmup = 10

    async def main() -> tuple[Collector, int, dict[str, list[Bar]], FakeBinance]:
        fake = FakeBinance(config=FakeConfig(speed=20))
        fake.clock.step(fake.first_time_ms + 300_000 - fake.clock.now_ms())
        async with fake:
            clock = ScaledClock(fake.clock.now_ms(), fake.clock.speed)
            now_window = align(clock.now_ms(), 10_000)
            published: dict[str, list[Bar]] = {s: [] for s in SYMBOLS}
            stop = asyncio.Event()

            def on_bar(bar: Bar) -> None:
                published[bar.symbol].append(bar)
                if all(bars and bars[-1].open_time >= now_window for bars in published.values()):
                    stop.set()
            collector = Collector(CollectorConfig(symbols=tuple(SYMBOLS)), BarsConfig(close_on="event_time"),
                                  BinanceSource(client_config(fake), SYMBOLS, rng_seed=3), BarStore(tmp_path),
                                  clock=clock, on_bar=on_bar, warmup_bars=warmup, backfill_warmup=True)
            await asyncio.wait_for(collector.run(stop), 30)
            return collector, now_window, published, fake

    collector, now_window, published, fake = asyncio.run(main())
    start = now_window - (warmup - 1) * 10_000
    assert collector.counters.warmup_bars == (warmup - 1) * len(SYMBOLS)
    assert collector.counters.source["backfill_trades"] > 0
    for symbol in SYMBOLS:
        assert [b.open_time for b in published[symbol]][:warmup] == list(range(start, now_window + 1, 10_000))
        trades = [t for t in reference(fake, start)[symbol] if t.event_time < now_window + 10_000]
        stored = BarStore(tmp_path).read_bars(symbol, 10_000, start, now_window + 10_000)
        pd.testing.assert_frame_equal(stored.reset_index(drop=True), bars_vectorized(trades, symbol), check_exact=True)
