"""Properties: the vectorized and event paths agree exactly; no result depends on a later bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dope.backtest import BacktestConfig, BacktestResult, run_event, run_vectorized
from dope.trading.accounting import HOLD, change_levels, signal

MIN = 60_000

configs = st.builds(
    lambda lo, width, fee, slip, short, frac: BacktestConfig(upper=lo + width, lower=lo, fee_rate=fee,
                                                             slippage_bps=slip, allow_short=short, fraction=frac),
    st.floats(-0.5, 0.5), st.floats(0.0, 0.5), st.sampled_from([0.0, 0.0004, 0.001, 0.0075]),
    st.sampled_from([0.0, 1.0, 7.5, 50.0]), st.booleans(), st.sampled_from([1.0, 0.5, 0.3]))


@st.composite
def markets(draw: st.DrawFn, max_bars: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random-walk opens and closes (with gaps between them) and predictions with NaN holes."""
    n = draw(st.integers(1, max_bars))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.sampled_from([0.001, 0.01, 0.05]))
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, vol / 4, n))
    pred = draw(arrays(np.float64, n, elements=st.one_of(st.floats(-1, 1), st.just(np.nan), st.just(np.inf))))
    return open_, close, pred


def _run_both(o: np.ndarray, c: np.ndarray, p: np.ndarray, cfg: BacktestConfig
              ) -> tuple[BacktestResult, BacktestResult]:
    times = np.arange(len(c), dtype=np.int64) * MIN
    return (run_vectorized(o, c, p, cfg, times=times, interval_ms=MIN),
            run_event({"open_time": times, "open": o, "close": c}, p, cfg, interval_ms=MIN))


@settings(max_examples=150, deadline=None)
@given(markets(), configs)
def test_vectorized_and_event_paths_agree_exactly(market: tuple[np.ndarray, ...], cfg: BacktestConfig) -> None:
    a, b = _run_both(*market, cfg)
    assert np.array_equal(a.equity, b.equity)
    assert np.array_equal(a.position, b.position)
    pd.testing.assert_frame_equal(a.trades, b.trades, check_exact=True)
    assert a.fees_paid == b.fees_paid
    assert np.array_equal(np.array(list(a.metrics.values())), np.array(list(b.metrics.values())),
                          equal_nan=True)


def _closed_before(trades: pd.DataFrame, k: int) -> pd.DataFrame:
    done = trades[(~trades["is_open"]) & (trades["exit_bar"] < k)]
    return done.reset_index(drop=True)


@settings(max_examples=100, deadline=None)
@given(markets(), configs, st.data())
def test_no_look_ahead_truncation_and_future_changes(market: tuple[np.ndarray, ...], cfg: BacktestConfig,
                                                    data: st.DataObject) -> None:
    o, c, p = market
    k = data.draw(st.integers(1, len(c)), label="cut")
    full = run_vectorized(o, c, p, cfg, interval_ms=MIN)
    cut = run_vectorized(o[:k], c[:k], p[:k], cfg, interval_ms=MIN)
    assert np.array_equal(cut.equity, full.equity[:k]) and np.array_equal(cut.position, full.position[:k])
    pd.testing.assert_frame_equal(_closed_before(cut.trades, k), _closed_before(full.trades, k))
    # Rewriting every input from bar k on (the prediction of bar k-1 stays) changes nothing before k.
    o2, c2, p2 = o.copy(), c.copy(), p.copy()
    o2[k:], c2[k:], p2[k:] = o[k:] * 1.5, c[k:] * 0.5, -p[k:]
    changed = run_event({"open_time": np.arange(len(c)) * MIN, "open": o2, "close": c2}, p2, cfg, interval_ms=MIN)
    assert np.array_equal(changed.equity[:k], full.equity[:k])
    # The prediction of bar k-1 cannot move the equity or position of bar k-1 itself.
    p3 = p.copy()
    p3[k - 1] = -p[k - 1] if p[k - 1] == p[k - 1] else 1.0
    moved = run_vectorized(o, c, p3, cfg, interval_ms=MIN)
    assert np.array_equal(moved.equity[:k], full.equity[:k])
    assert np.array_equal(moved.position[:k], full.position[:k])


@settings(max_examples=60, deadline=None)
@given(markets(), configs)
def test_accounting_identities(market: tuple[np.ndarray, ...], cfg: BacktestConfig) -> None:
    """Final equity = initial cash + P&L of every trade (the open one marked); fees add up."""
    o, c, p = market
    r = run_vectorized(o, c, p, cfg, interval_ms=MIN)
    total_pnl = r.trades["pnl"].sum()
    assert np.isclose(r.equity[-1], cfg.initial_cash + total_pnl, rtol=1e-9, atol=1e-6)
    assert np.isclose(r.fees_paid, r.trades["entry_fee"].sum() + r.trades["exit_fee"].sum(), rtol=1e-9, atol=1e-12)
    if not cfg.allow_short:
        assert (r.position >= 0).all()


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 1), st.floats(0, 1), st.booleans(),
       st.sampled_from([-1, 0, 1]))
def test_change_levels_are_exactly_the_predictions_that_change_direction(
        prediction: float, lower: float, width: float, allow_short: bool, direction: int) -> None:
    if direction < 0 and not allow_short:
        direction = 0  # a long/flat run is never short
    upper = lower + width
    above, below = change_levels(direction, upper, lower, allow_short)
    wanted = signal(prediction, upper, lower, allow_short)
    assert (prediction > above or prediction < below) == (wanted not in (HOLD, direction))
