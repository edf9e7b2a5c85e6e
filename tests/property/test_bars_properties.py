"""Invariants of bar aggregation over random trade streams (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from dope.bars import BarBuilder, TradeArrays, bars_to_frame, build_bars, resample_bars
from tests.bars_helpers import messages_of

SUMS = ["volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume", "vwap"]


@st.composite
def trade_arrays(draw: st.DrawFn) -> TradeArrays:
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0, 1, 50, 900, 40_000], size=n, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    time = 1_700_000_000_000 + np.cumsum(gaps).astype(np.int64)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.001, n))), 2)
    qty = np.round(rng.lognormal(-3, 1, n), 5) + 1e-5
    ids = np.arange(n, dtype=np.int64) + 1000
    return TradeArrays.raw(time, ids, price, qty, rng.random(n) < 0.5)


@settings(max_examples=60, deadline=None)
@given(trade_arrays(), st.sampled_from([1_000, 10_000, 60_000]))
def test_incremental_and_vectorized_bars_are_identical(arrays: TradeArrays, interval_ms: int) -> None:
    builder = BarBuilder("X", interval_ms)
    bars = [bar for trade in messages_of(arrays, "X") for bar in builder.add(trade)] + builder.flush()
    pd.testing.assert_frame_equal(bars_to_frame(bars), build_bars(arrays, "X", interval_ms), check_exact=True)


@settings(max_examples=60, deadline=None)
@given(trade_arrays(), st.sampled_from([(1_000, 10), (10_000, 6), (10_000, 90), (60_000, 15)]))
def test_bars_reaggregate_exactly_into_multiples(arrays: TradeArrays, step: tuple[int, int]) -> None:
    interval_ms, factor = step
    fine = build_bars(arrays, "X", interval_ms)
    direct = build_bars(arrays, "X", interval_ms * factor)
    combined = resample_bars(fine, interval_ms, interval_ms * factor)
    exact = [c for c in direct.columns if c not in SUMS]
    pd.testing.assert_frame_equal(combined[exact], direct[exact], check_exact=True)
    pd.testing.assert_frame_equal(combined[SUMS], direct[SUMS], rtol=1e-12, atol=0)
    assert combined["count"].sum() == len(arrays)


@settings(max_examples=40, deadline=None)
@given(trade_arrays(), st.integers(0, 2**16))
def test_reordering_within_grace_changes_no_price_and_loses_no_trade(arrays: TradeArrays, seed: int) -> None:
    trades = messages_of(arrays, "X")
    rng = np.random.default_rng(seed)
    shuffled = sorted(trades, key=lambda t: t.event_time + int(rng.integers(0, 500)))
    builder = BarBuilder("X", 10_000, grace_ms=1_000)
    bars = bars_to_frame([bar for t in shuffled for bar in builder.add(t)] + builder.flush())
    expected = build_bars(arrays, "X", 10_000)
    assert builder.late_trades == 0
    exact = [c for c in expected.columns if c not in SUMS]
    pd.testing.assert_frame_equal(bars[exact], expected[exact], check_exact=True)
    pd.testing.assert_frame_equal(bars[SUMS], expected[SUMS], rtol=1e-12, atol=0)
