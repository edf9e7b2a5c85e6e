"""ReplaySource and store-bar replay: event-time order across symbols, resume, batches, speed (simulated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dope.bars import build_bars
from dope.clock import SimulatedClock
from dope.market.base import UnknownSymbolError
from dope.market.replay import ReplaySource, replay_store_bars
from dope.messages import Bar, Trade
from dope.store import BarStore
from dope.store.files import read_trades
from tests.conftest import bundled_trades_file

FILES = [bundled_trades_file("BTCUSDT"), bundled_trades_file("ETHUSDT")]
TEN_S = 10_000


async def _collect(stream: AsyncIterator[list[Trade]]) -> list[list[Trade]]:
    return [batch async for batch in stream]


def _replay(source: ReplaySource, resume: dict[str, int] | None = None) -> list[list[Trade]]:
    return asyncio.run(asyncio.wait_for(_collect(source.trades(resume or {})), timeout=30))


def test_merged_in_event_time_order_with_every_trade() -> None:
    source = ReplaySource(FILES, ["BTCUSDT", "ETHUSDT"], batch_size=5_000)
    batches = _replay(source)
    trades = [t for b in batches for t in b]
    assert len(trades) == 19_904 + 14_515
    times = [t.event_time for t in trades]
    assert times == sorted(times)
    assert {t.symbol for t in trades[:200]} == {"BTCUSDT", "ETHUSDT"}  # interleaved, not one file then the other
    assert max(len(b) for b in batches) == 5_000
    assert source.counters["trades"] == len(trades) and source.counters["batches"] == len(batches)
    btc = [t.trade_id for t in trades if t.symbol == "BTCUSDT"]
    assert btc == read_trades(FILES[0]).trade_id.tolist()


def test_symbols_filter_and_unknown_symbol() -> None:
    trades = [t for b in _replay(ReplaySource(FILES, ["ETHUSDT"])) for t in b]
    assert {t.symbol for t in trades} == {"ETHUSDT"} and len(trades) == 14_515
    with pytest.raises(UnknownSymbolError, match="SOLUSDT"):
        ReplaySource(FILES, ["BTCUSDT", "SOLUSDT"])


def test_resume_skips_older_trades_per_symbol() -> None:
    all_btc = read_trades(FILES[0])
    cut = int(all_btc.time[10_000])
    source = ReplaySource(FILES, ["BTCUSDT", "ETHUSDT"])
    trades = [t for b in _replay(source, {"BTCUSDT": cut}) for t in b]
    btc = [t for t in trades if t.symbol == "BTCUSDT"]
    assert min(t.event_time for t in btc) == cut
    assert len(btc) == int((all_btc.time >= cut).sum())
    assert sum(t.symbol == "ETHUSDT" for t in trades) == 14_515
    assert source.counters["skipped_resume"] == int((all_btc.time < cut).sum())


def test_duplicate_files_are_counted_not_replayed_twice() -> None:
    source = ReplaySource([FILES[0], FILES[0]], ["BTCUSDT"])
    trades = [t for b in _replay(source) for t in b]
    assert len(trades) == 19_904 and source.counters["duplicates"] == 19_904


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_speed_paces_on_the_clock_without_sleeping(speed: float) -> None:
    wall = SimulatedClock(1_000_000)
    source = ReplaySource([FILES[1]], ["ETHUSDT"], speed=speed, clock=wall, batch_size=100_000)
    trades = read_trades(FILES[1])
    seen: list[tuple[int, int, int]] = []

    async def run() -> None:
        async for batch in source.trades({}):
            seen.append((wall.now_ms(), batch[0].event_time, batch[-1].event_time))

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    span = int(trades.time[-1] - trades.time[0])
    assert abs((wall.now_ms() - 1_000_000) - span / speed) <= 2
    for now, first, last in seen:  # a batch only holds trades the replay clock has reached
        replay_now = int(trades.time[0]) + (now - 1_000_000) * speed
        assert first <= last <= replay_now + speed
    assert len(seen) == len(set(trades.time.tolist()))  # at 1x+, one batch per distinct trade time


def test_speed_zero_never_touches_the_clock() -> None:
    wall = SimulatedClock(5)
    _replay(ReplaySource([FILES[0]], ["BTCUSDT"], clock=wall))
    assert wall.now_ms() == 5


def _stored(tmp_path: Path) -> BarStore:
    store = BarStore(tmp_path)
    for path, symbol in zip(FILES, ["BTCUSDT", "ETHUSDT"], strict=True):
        store.write_bars(build_bars(read_trades(path), symbol, TEN_S), TEN_S)
    return store


async def _bars(stream: AsyncIterator[Bar]) -> list[Bar]:
    return [bar async for bar in stream]


def test_store_bars_replay_in_time_order(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    bars = asyncio.run(_bars(replay_store_bars(store, ["ETHUSDT", "BTCUSDT"], TEN_S)))
    assert len(bars) == 132
    keys = [(b.open_time, b.symbol) for b in bars]
    assert keys[:2] == [(1723161250000, "ETHUSDT"), (1723161250000, "BTCUSDT")]  # symbol order as asked
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    expected = store.read_bars("BTCUSDT", TEN_S)
    assert [b.close for b in bars if b.symbol == "BTCUSDT"] == expected["close"].tolist()
    assert all(b.event_time == b.close_time for b in bars)


def test_store_bars_replay_range_resume_and_speed(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    wall = SimulatedClock(0)
    start, end = 1723161600000, 1723161700000  # 00:00:00 .. 00:01:40 on 2024-08-09
    source = ReplaySource(None, ["BTCUSDT", "ETHUSDT"], store=store, speed=2.0, clock=wall)
    stream = source.bars(TEN_S, {"ETHUSDT": start + 50_000}, start_ms=start, end_ms=end)
    bars = asyncio.run(asyncio.wait_for(_bars(stream), timeout=30))
    assert [b.open_time for b in bars if b.symbol == "BTCUSDT"] == list(range(start, end, TEN_S))
    assert [b.open_time for b in bars if b.symbol == "ETHUSDT"] == list(range(start + 50_000, end, TEN_S))
    assert wall.now_ms() == (end - start) // 2  # 100 s of bars at 2x: from the first bar's open to the last's end
    with pytest.raises(UnknownSymbolError, match="SOLUSDT"):
        asyncio.run(_bars(replay_store_bars(store, ["SOLUSDT"], TEN_S)))
