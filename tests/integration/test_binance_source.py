"""BinanceSource against the fake Binance: faults on the wire never lose or double a trade."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pandas as pd
import pytest

from dope.bars import BarBuilder, TradeArrays, bars_to_frame, build_bars
from dope.config import BinanceConfig
from dope.market.base import UnknownSymbolError
from dope.market.binance import BinanceAPIError, BinanceSource
from dope.messages import Bar, Trade
from tests.fakes.binance import FakeBinance, FakeConfig, FaultPlan, StreamFaults

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
INTERVAL_MS = 10_000
SPEED = 300
"""Exchange clock speed of the full-length runs (~650 s of trades in ~2.2 s)."""


def client_config(fake: FakeBinance, **overrides: object) -> BinanceConfig:
    base: dict[str, object] = {"rest_url": fake.rest_url, "ws_url": fake.ws_url, "reconnect_min_ms": 20,
                               "reconnect_max_ms": 200, "stall_timeout_ms": 500, "gap_timeout_ms": 300}
    return BinanceConfig(**{**base, **overrides})  # type: ignore[arg-type]


def reference(fake: FakeBinance, start_ms: int, raw: bool = False) -> dict[str, list[Trade]]:
    """What a perfect client yields: every trade the exchange has from ``start_ms`` on."""
    out: dict[str, list[Trade]] = {}
    for symbol, data in fake.data.items():
        if raw:
            out[symbol] = [Trade(symbol=symbol, event_time=t.time, trade_id=t.id, price=float(t.price),
                                 qty=float(t.qty), is_buyer_maker=t.is_buyer_maker) for t in data.raw if t.time >= start_ms]
        else:
            out[symbol] = [Trade(symbol=symbol, event_time=a.time, trade_id=a.agg_id, price=float(a.price),
                                 qty=float(a.qty), is_buyer_maker=a.is_buyer_maker, first_trade_id=a.first_id,
                                 last_trade_id=a.last_id) for a in data.agg if a.time >= start_ms]
    return out


async def collect(source: BinanceSource, resume: dict[str, int], last_ids: dict[str, int],
                  timeout_s: float = 15.0) -> dict[str, list[Trade]]:
    """Consume the source until every symbol's last trade id arrived."""
    got: dict[str, list[Trade]] = {s: [] for s in last_ids}
    stream = source.trades(resume)

    async def consume() -> None:
        async for batch in stream:
            for trade in batch:
                got[trade.symbol].append(trade)
            if all(got[s] and got[s][-1].trade_id >= last for s, last in last_ids.items()):
                return
    try:
        await asyncio.wait_for(consume(), timeout_s)
    finally:
        await stream.aclose()
    return got


def run_source(fake_config: FakeConfig, faults: FaultPlan | None = None, *, from_end_s: float | None = None,
               raw: bool = False, clock_waits_for_live: bool = False,
               **client: object) -> tuple[dict[str, list[Trade]], dict[str, list[Trade]], BinanceSource, FakeBinance]:
    """Replay (the last ``from_end_s`` exchange seconds of) the data through a BinanceSource.

    ``clock_waits_for_live`` holds the exchange clock until the source has backfilled and streams, so every
    stream message (and every fault on one) comes after the start-up backfill, however slow the machine.
    """
    async def main() -> tuple[dict[str, list[Trade]], dict[str, list[Trade]], BinanceSource, FakeBinance]:
        fake = FakeBinance(config=fake_config, faults=faults)
        start = fake.first_time_ms if from_end_s is None else fake.last_time_ms - int(from_end_s * 1000)
        fake.clock.step(start - fake.clock.now_ms())
        async with fake:
            config = client_config(fake, stream="trade" if raw else "aggTrade", **client)
            source = BinanceSource(config, SYMBOLS, rng_seed=11)
            expected = reference(fake, start, raw)
            last_ids = {s: trades[-1].trade_id for s, trades in expected.items()}
            starter = asyncio.create_task(_start_clock_when_live(fake, source)) if clock_waits_for_live else None
            try:
                got = await collect(source, dict.fromkeys(SYMBOLS, start), last_ids)
            finally:
                if starter is not None:
                    starter.cancel()
            return got, expected, source, fake
    return asyncio.run(main())


async def _start_clock_when_live(fake: FakeBinance, source: BinanceSource) -> None:
    speed = fake.clock.speed
    fake.clock.set_speed(0)
    while not source.is_live:
        await asyncio.sleep(0.005)
    fake.clock.set_speed(speed)


def bars_vectorized(trades: list[Trade], symbol: str) -> pd.DataFrame:
    arrays = TradeArrays(
        np.array([t.event_time for t in trades], dtype=np.int64), np.array([t.trade_id for t in trades], dtype=np.int64),
        np.array([t.price for t in trades]), np.array([t.qty for t in trades]),
        np.array([t.is_buyer_maker for t in trades]), np.array([t.raw_first_id for t in trades], dtype=np.int64),
        np.array([t.raw_last_id for t in trades], dtype=np.int64))
    return build_bars(arrays, symbol, INTERVAL_MS)


def bars_incremental(trades: list[Trade], symbol: str) -> list[Bar]:
    builder = BarBuilder(symbol, INTERVAL_MS)
    return [bar for trade in trades for bar in builder.add(trade)]


def assert_same_trades_and_bars(got: dict[str, list[Trade]], expected: dict[str, list[Trade]]) -> None:
    for symbol, trades in expected.items():
        assert [t.trade_id for t in got[symbol]] == [t.trade_id for t in trades], f"{symbol} trade ids differ"
        assert got[symbol] == trades
        pd.testing.assert_frame_equal(bars_vectorized(got[symbol], symbol), bars_vectorized(trades, symbol))
        assert bars_incremental(got[symbol], symbol) == bars_incremental(trades, symbol)
        assert len(bars_to_frame(bars_incremental(trades, symbol))) >= 3


def test_fault_free_run_yields_every_agg_trade_once_in_order() -> None:
    got, expected, source, fake = run_source(FakeConfig(speed=SPEED))
    assert_same_trades_and_bars(got, expected)
    assert source.counters["connects"] == 1 and source.counters["malformed"] == 0
    assert fake.connections == 1


def test_faulty_run_equals_the_fault_free_one(caplog: pytest.LogCaptureFixture) -> None:
    faults = FaultPlan(seed=3, streams=[
        StreamFaults(drop_after=400, duplicate_rate=0.05),
        StreamFaults(shutdown_after=300, reorder_window=4, malformed={10: "garbage", 20: "wrong_types"}),
        StreamFaults(stall_after=200, stall_s=1.5),
        StreamFaults(close_after=300, duplicate_rate=0.2, reorder_window=3),
        StreamFaults(drop_after=500, malformed={5: "bad_json"}),
    ], default=StreamFaults(duplicate_rate=0.05, reorder_window=3))
    faults.fail_next_rest(429, retry_after=1, path="/api/v3/aggTrades")
    faults.fail_next_rest(503, path="/api/v3/aggTrades")
    config = FakeConfig(speed=200, ping_interval_s=0.3, pong_timeout_s=1.0, connection_lifetime_s=0.3)
    with caplog.at_level(logging.WARNING, logger="dope.market.binance"):
        got, expected, source, fake = run_source(config, faults)
    assert_same_trades_and_bars(got, expected)
    c = source.counters
    assert c["disconnects"] >= 5 and c["connects"] >= 6
    assert c["server_shutdowns"] == 1 and c["stalls"] == 1
    assert c["duplicates"] > 0 and c["out_of_order"] > 0
    assert c["malformed"] == 3 and c["rate_limited"] == 1 and c["server_errors"] == 1
    assert {"dropped after 400 messages", "serverShutdown", "closed after 300 messages", "24h cut"} <= set(
        fake.closed_reasons)
    assert any("malformed Binance frame for BTCUSDT" in r.getMessage() for r in caplog.records)
    retry = [r for r in fake.requests if r.path == "/api/v3/aggTrades"]
    assert retry[0].status == 429 and retry[1].time_ms - retry[0].time_ms >= 1000 * 200 * 0.9


def test_server_shutdown_reconnects_without_loss() -> None:
    faults = FaultPlan(streams=[StreamFaults(shutdown_after=50), StreamFaults(shutdown_after=80)])
    got, expected, source, _ = run_source(FakeConfig(speed=100), faults, from_end_s=40)
    assert_same_trades_and_bars(got, expected)
    assert source.counters["server_shutdowns"] == 2 and source.counters["connects"] == 3


def test_lost_message_is_backfilled_after_the_gap_timeout() -> None:
    faults = FaultPlan(streams=[StreamFaults(lose={30, 31, 90})])
    got, expected, source, fake = run_source(FakeConfig(speed=100), faults, from_end_s=40, clock_waits_for_live=True)
    assert_same_trades_and_bars(got, expected)
    assert source.counters["connects"] == 1 and source.counters["gap_backfills"] >= 1
    assert source.counters["backfill_requests"] >= 3


def test_pings_are_answered_so_the_connection_lives() -> None:
    config = FakeConfig(speed=25, ping_interval_s=0.25, pong_timeout_s=0.6)
    got, expected, source, fake = run_source(config, from_end_s=50, stall_timeout_ms=2_000)
    assert_same_trades_and_bars(got, expected)
    assert source.counters["connects"] == 1 and "pong timeout" not in fake.closed_reasons


def test_raw_trade_stream() -> None:
    faults = FaultPlan(seed=2, default=StreamFaults(duplicate_rate=0.1, reorder_window=3))
    got, expected, source, _ = run_source(FakeConfig(speed=100), faults, from_end_s=40, raw=True)
    assert_same_trades_and_bars(got, expected)
    assert all(t.first_trade_id == -1 for t in got["BTCUSDT"]) and source.counters["duplicates"] > 0


def test_unknown_symbol_is_a_clear_error() -> None:
    async def main() -> None:
        async with FakeBinance(config=FakeConfig(speed=0)) as fake:
            source = BinanceSource(client_config(fake), ["BTCUSDT", "NOPEUSDT"])
            with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
                await anext(source.trades({}))
    asyncio.run(main())


def test_a_request_binance_refuses_is_a_configuration_error_not_retried() -> None:
    faults = FaultPlan()
    faults.fail_next_rest(400, path="/api/v3/aggTrades", code=-1100, msg="Illegal characters found in parameter.")

    async def main() -> None:
        async with FakeBinance(config=FakeConfig(speed=0), faults=faults) as fake:
            source = BinanceSource(client_config(fake), SYMBOLS)
            stream = source.trades(dict.fromkeys(SYMBOLS, fake.first_time_ms))
            with pytest.raises(BinanceAPIError, match="-1100"):
                await asyncio.wait_for(anext(stream), 10)
    asyncio.run(main())


def test_a_rejected_frame_does_not_take_the_genuine_trades_id() -> None:
    """A frame with a bad price and id N arrives first: it is rejected, and the genuine trade N is kept."""
    faults = FaultPlan(default=StreamFaults(poisoned={200: "NaN", 400: "0.00000000", 600: "-1.5"}))
    got, expected, source, _ = run_source(FakeConfig(speed=SPEED), faults, from_end_s=200, clock_waits_for_live=True)
    assert_same_trades_and_bars(got, expected)
    assert source.counters["malformed"] == 3


class WaitRecordingClock:
    """A clock whose waits return at once and are recorded (exchange time comes from the fake)."""

    def __init__(self) -> None:
        self.now, self.waits = 0, list[int]()

    def now_ms(self) -> int:
        return self.now

    async def sleep_until(self, time_ms: int) -> None:
        self.waits.append(time_ms - self.now)
        self.now = max(self.now, time_ms)


def test_repeated_403_and_5xx_are_retried_with_capped_exponential_backoff_on_the_injected_clock() -> None:
    faults = FaultPlan()
    for status in (403, 503) * 6:
        faults.fail_next_rest(status, path="/api/v3/exchangeInfo")
    clock = WaitRecordingClock()

    async def main() -> BinanceSource:
        async with FakeBinance(config=FakeConfig(speed=0), faults=faults) as fake:
            config = client_config(fake, reconnect_min_ms=1_000, reconnect_max_ms=8_000)
            source = BinanceSource(config, SYMBOLS, clock=clock, rng_seed=2)
            stream = source.trades(dict.fromkeys(SYMBOLS, fake.first_time_ms))
            fake.clock.step(60_000)
            await asyncio.wait_for(anext(stream), 10)  # a real wait of 12 backoffs would be ~30 s
            await stream.aclose()
            return source
    source = asyncio.run(main())
    assert (source.counters["forbidden"], source.counters["server_errors"]) == (6, 6)
    assert len(clock.waits) == 12
    assert all(0 <= wait <= min(8_000, 1_000 * 2 ** i) for i, wait in enumerate(clock.waits))
    assert max(clock.waits[6:]) > 1_000  # it did grow past the first cap
