"""Incremental and vectorized bars: windows, empty bars, lateness, grace, parity on real trades."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dope.bars import BarBuilder, TradeArrays, bars_to_frame, build_bars, parse_interval, resample_bars
from dope.bars.interval import format_interval
from dope.messages import Trade
from tests.bars_helpers import arrays_of, messages_of, read_trades_csv
from tests.conftest import bundled_trades_file


def trade(t: int, i: int, price: float, qty: float = 1.0, maker: bool = False) -> Trade:
    return Trade(symbol="X", event_time=t, trade_id=i, price=price, qty=qty, is_buyer_maker=maker)


def run_builder(builder: BarBuilder, trades: list[Trade]) -> pd.DataFrame:
    bars = [bar for t in trades for bar in builder.add(t)]
    return bars_to_frame(bars + builder.flush())


@pytest.mark.parametrize(("text", "ms"), [("1s", 1000), ("10s", 10_000), ("15m", 900_000), ("1h", 3_600_000),
                                          ("1d", 86_400_000)])
def test_interval_round_trip(text: str, ms: int) -> None:
    assert parse_interval(text) == ms
    assert format_interval(ms) == text


@pytest.mark.parametrize("bad", ["", "10", "0s", "500ms", "2d", "ten s"])
def test_bad_interval_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        parse_interval(bad)


def test_windows_are_utc_aligned_and_empty_intervals_carry_the_price() -> None:
    frame = run_builder(BarBuilder("X", 10_000), [trade(3_000, 1, 10.0), trade(9_999, 2, 12.0, maker=True),
                                                 trade(35_000, 3, 11.0)])
    assert frame["open_time"].tolist() == [0, 10_000, 20_000, 30_000]
    assert frame["close_time"].tolist() == [9_999, 19_999, 29_999, 39_999]
    assert frame["empty"].tolist() == [False, True, True, False]
    first, gap = frame.iloc[0], frame.iloc[1]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 12.0, 10.0, 12.0)
    assert first["taker_buy_volume"] == 1.0 and first["volume"] == 2.0 and first["count"] == 2
    assert (gap["open"], gap["close"], gap["volume"], gap["count"], gap["first_trade_id"]) == (12.0, 12.0, 0.0, 0, -1)


def test_emit_empty_false_skips_quiet_windows() -> None:
    frame = run_builder(BarBuilder("X", 10_000, emit_empty=False), [trade(1, 1, 1.0), trade(45_000, 2, 2.0)])
    assert frame["open_time"].tolist() == [0, 40_000]


def test_late_trade_is_counted_and_reported_not_folded_in() -> None:
    seen: list[tuple[int, int]] = []
    builder = BarBuilder("X", 10_000, on_late=lambda t, open_time: seen.append((t.trade_id, open_time)))
    builder.add(trade(1_000, 1, 10.0))
    closed = builder.add(trade(11_000, 2, 11.0))
    assert [bar.open_time for bar in closed] == [0]
    assert builder.add(trade(2_000, 3, 99.0, qty=5.0)) == []
    assert (builder.late_trades, builder.late_volume, seen) == (1, 5.0, [(3, 10_000)])
    assert closed[0].high == 10.0


def test_grace_period_takes_reordered_trades_and_keeps_time_order_for_open_close() -> None:
    in_order = [trade(1_000, 1, 10.0), trade(9_000, 2, 12.0), trade(10_500, 3, 11.0), trade(30_000, 4, 9.0)]
    shuffled = [in_order[0], in_order[2], in_order[1], in_order[3]]
    strict = run_builder(BarBuilder("X", 10_000, grace_ms=2_000), in_order)
    graceful = run_builder(BarBuilder("X", 10_000, grace_ms=2_000), shuffled)
    pd.testing.assert_frame_equal(strict, graceful)
    assert strict.iloc[0]["close"] == 12.0


def test_advance_closes_quiet_bars_on_the_clock() -> None:
    builder = BarBuilder("X", 10_000, grace_ms=500)
    builder.add(trade(1_000, 1, 10.0))
    assert builder.advance(10_400) == []
    assert [b.open_time for b in builder.advance(30_600)] == [0, 10_000, 20_000]


def test_resumed_builder_starts_where_told_and_carries_the_previous_close() -> None:
    builder = BarBuilder("X", 10_000, next_open_time=20_000, last_close=7.0)
    frame = run_builder(builder, [trade(45_000, 1, 8.0)])
    assert frame["open_time"].tolist() == [20_000, 30_000, 40_000]
    assert frame["close"].tolist() == [7.0, 7.0, 8.0]


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize("interval", ["1s", "10s", "1m"])
def test_incremental_equals_vectorized_on_real_trades(symbol: str, interval: str) -> None:
    arrays = arrays_of(read_trades_csv(bundled_trades_file(symbol)))
    interval_ms = parse_interval(interval)
    vectorized = build_bars(arrays, symbol, interval_ms)
    incremental = run_builder(BarBuilder(symbol, interval_ms), messages_of(arrays, symbol))
    pd.testing.assert_frame_equal(incremental, vectorized, check_exact=True)
    assert vectorized["count"].sum() == len(arrays)


def test_vectorized_sorts_unsorted_input_and_resumes_with_carried_close() -> None:
    arrays = TradeArrays.raw(np.array([25_000, 5_000], dtype=np.int64), np.array([2, 1], dtype=np.int64),
                             np.array([3.0, 2.0]), np.array([1.0, 1.0]), np.array([False, True]))
    frame = build_bars(arrays, "X", 10_000)
    assert frame["close"].tolist() == [2.0, 2.0, 3.0]
    resumed = build_bars(arrays, "X", 10_000, start_open_time=-10_000, prev_close=1.5)
    assert resumed["open_time"].tolist() == [-10_000, 0, 10_000, 20_000]
    assert resumed["close"].tolist() == [1.5, 2.0, 2.0, 3.0]


def test_resample_checks_multiples() -> None:
    with pytest.raises(ValueError, match="multiple"):
        resample_bars(build_bars(arrays_of(read_trades_csv(bundled_trades_file("BTCUSDT"))), "X", 10_000),
                      10_000, 15_000)
