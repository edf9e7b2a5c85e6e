"""Backtest semantics on hand-computed examples, metrics by hand, baselines, sweep, input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dope.backtest import (
    TRADE_COLUMNS,
    BacktestConfig,
    buy_and_hold,
    compute_metrics,
    periods_per_year,
    run_event,
    run_vectorized,
    sweep,
    sweep_equity,
    zero_baseline,
)
from dope.backtest.result import empty_trades
from dope.backtest.vectorized import checked_times

MIN = 60_000


def _both(o: list[float], c: list[float], p: list[float], cfg: BacktestConfig) -> pd.DataFrame:
    """Run both paths, check they agree exactly, return the vectorized result's frame + trades."""
    times = np.arange(len(c)) * MIN
    a = run_vectorized(o, c, p, cfg, times=times)
    b = run_event({"open_time": times, "open": o, "close": c}, p, cfg)
    assert a.equity.tolist() == b.equity.tolist() and a.position.tolist() == b.position.tolist()
    pd.testing.assert_frame_equal(a.trades, b.trades)
    assert a.fees_paid == b.fees_paid and a.metrics == pytest.approx(b.metrics, nan_ok=True)
    return a


def test_long_with_fees_and_slippage_by_hand() -> None:
    cfg = BacktestConfig(upper=0.5, lower=-0.5, fee_rate=0.001, slippage_bps=10, initial_cash=1000.0)
    r = _both([100, 100, 110, 120], [100, 105, 115, 118], [1, 0, -1, 0], cfg)
    buy = 100 * 1.001
    value = 1000 / 1.001
    qty = value / buy
    cash = 1000 - value - value * 0.001
    sell = 120 * 0.999
    final_cash = cash + qty * sell * (1 - 0.001)
    assert r.equity == pytest.approx([1000, cash + qty * 105, cash + qty * 115, final_cash], rel=1e-12)
    assert r.position.tolist() == pytest.approx([0, qty, qty, 0])
    t = r.trades.iloc[0]
    assert (t.entry_bar, t.exit_bar, t.entry_time, t.exit_time, t.direction) == (1, 3, MIN, 3 * MIN, 1)
    assert (t.entry_price, t.exit_price) == pytest.approx((buy, sell))
    assert t.pnl == pytest.approx(final_cash - 1000, rel=1e-9)
    assert r.fees_paid == pytest.approx(value * 0.001 + qty * sell * 0.001)


def test_short_and_reversal_by_hand() -> None:
    cfg = BacktestConfig(upper=0.5, lower=-0.5, fee_rate=0.0, allow_short=True, initial_cash=1000.0)
    r = _both([100, 100, 90, 95], [100, 95, 92, 96], [-1, 0, 1, 0], cfg)
    long_qty = 1050 / 95
    assert r.equity == pytest.approx([1000, 1050, 1080, long_qty * 96])
    assert r.position == pytest.approx([0, -10, -10, long_qty])
    short, long_ = r.trades.itertuples()
    assert (short.direction, short.entry_price, short.exit_price, short.pnl) == (-1, 100, 95, pytest.approx(50))
    assert long_.is_open and long_.exit_bar == -1 and long_.exit_price == 96
    assert long_.pnl == pytest.approx(long_qty)
    assert r.metrics["n_trades"] == 1  # only the closed round trip counts


def test_long_flat_sells_to_flat_not_short() -> None:
    cfg = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.0)
    r = _both([10, 10, 10], [10, 10, 10], [-1, -1, -1], cfg)
    assert r.position.tolist() == [0, 0, 0] and len(r.trades) == 0


def test_nan_prediction_holds_and_last_decision_never_fills() -> None:
    cfg = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.0)
    r = _both([10, 10, 11, 12], [10, 11, 12, 13], [1, math.nan, math.nan, -1], cfg)
    assert r.position.tolist() == [0, 1000, 1000, 1000]  # held through NaN; the last sell never fills
    assert bool(r.trades.iloc[0].is_open)


def test_fraction_sizes_part_of_the_cash() -> None:
    cfg = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.0, fraction=0.25, initial_cash=1000.0)
    r = _both([10, 10, 20], [10, 10, 20], [1, 0, 0], cfg)
    assert r.position[1] == pytest.approx(25.0) and r.equity[2] == pytest.approx(750 + 25 * 20)


def test_buy_and_hold_and_zero_baseline() -> None:
    cfg = BacktestConfig(upper=0.1, lower=-0.1, fee_rate=0.0)
    o, c = [10.0, 10.0, 11.0], [10.0, 11.0, 12.0]
    bh = buy_and_hold(o, c, cfg, interval_ms=MIN)
    assert bh.equity.tolist() == pytest.approx([10_000, 11_000, 12_000])
    zero = zero_baseline(o, c, cfg, interval_ms=MIN)
    assert zero.equity.tolist() == [10_000] * 3 and zero.metrics["total_return"] == 0.0
    assert zero.metrics["n_trades"] == 0 and zero.metrics["max_drawdown"] == 0.0


def test_sharpe_sortino_annualised_for_the_bar_interval() -> None:
    returns = [0.01, -0.01, 0.02, 0.0]
    equity = 100 * np.cumprod(1 + np.array(returns))
    mean = 0.005
    std = math.sqrt((0.005**2 + 0.015**2 + 0.015**2 + 0.005**2) / 3)
    down = math.sqrt(0.01**2 / 4)
    for interval_ms, per_year in ((10_000, 3_153_600), (900_000, 35_040)):
        m = compute_metrics(equity, interval_ms, empty_trades(), initial_cash=100.0)
        assert periods_per_year(interval_ms) == per_year
        assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(per_year), rel=1e-12)
        assert m["sortino"] == pytest.approx(mean / down * math.sqrt(per_year), rel=1e-12)


def test_drawdown_cagr_calmar_exposure_turnover_by_hand() -> None:
    m = compute_metrics(np.array([110.0, 99.0, 120.0, 90.0]), 900_000, empty_trades(), initial_cash=100.0,
                        position=np.array([0.0, 1.0, 1.0, 0.0]))
    assert m["max_drawdown"] == pytest.approx(0.25) and m["exposure"] == 0.5
    year = 35_040
    equity = np.linspace(100.0, 110.0, year)
    trades = pd.DataFrame([[1, 0, 5, 0, 5, 2.0, 50.0, 55.0, 0.1, 0.11, 9.79, 9.79 / 100, False],
                           [1, 6, -1, 6, -1, 1.0, 50.0, 40.0, 0.05, 0.0, -10.05, -10.05 / 50, True]],
                          columns=list(TRADE_COLUMNS))
    m = compute_metrics(equity, 900_000, trades, initial_cash=100.0)
    assert m["cagr"] == pytest.approx(0.10, rel=1e-9) and m["total_return"] == pytest.approx(0.10)
    assert m["calmar"] != m["calmar"]  # no drawdown: Calmar undefined (NaN)
    assert (m["n_trades"], m["win_rate"], m["avg_trade_pnl"]) == (1, 1.0, pytest.approx(9.79))
    assert m["fees_paid"] == pytest.approx(0.1 + 0.11 + 0.05)
    assert m["turnover"] == pytest.approx((100 + 110 + 50) / 105.0)


def test_sweep_matches_single_runs() -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]]
    p = rng.normal(0, 1, n)
    cfg = BacktestConfig(upper=0, lower=0, fee_rate=0.001, slippage_bps=2, allow_short=True)
    grid = sweep(o, c, p, [0.0, 0.5, 1.0], [-1.0, 0.0, 0.5], cfg, interval_ms=MIN)
    assert len(grid) == 8  # pairs with lower > upper are left out
    for row in grid.to_dict("records"):
        single = run_vectorized(o, c, p, cfg.with_thresholds(row["upper"], row["lower"]), interval_ms=MIN)
        assert np.array_equal([row[k] for k in single.metrics], list(single.metrics.values()), equal_nan=True)
    curves = sweep_equity(o, c, p, [(0.5, 0.0), (1.0, -1.0)], cfg)
    assert curves[1].tolist() == run_vectorized(o, c, p, cfg.with_thresholds(1.0, -1.0),
                                                interval_ms=MIN).equity.tolist()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"upper": 0.0, "lower": 0.1}, "above upper"),
    ({"upper": math.nan, "lower": 0.0}, "NaN"),
    ({"upper": 0.0, "lower": 0.0, "fee_rate": -0.1}, "fee_rate"),
    ({"upper": 0.0, "lower": 0.0, "fraction": 1.5}, "fraction"),
])
def test_config_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BacktestConfig(**kwargs)  # type: ignore[arg-type]


def test_a_fill_at_every_bar_is_logged_and_both_paths_still_agree() -> None:
    rng = np.random.default_rng(8)
    n = 50_000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.0002, n)))
    o = np.r_[100.0, c[:-1]]
    p = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # a reversal at every bar
    cfg = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.0005, allow_short=True)
    times = np.arange(n) * MIN
    fast = run_vectorized(o, c, p, cfg, times=times)
    slow = run_event({"open_time": times, "open": o, "close": c}, p, cfg)
    assert len(fast.trades) == n - 1
    assert np.array_equal(fast.equity, slow.equity) and np.array_equal(fast.position, slow.position)
    pd.testing.assert_frame_equal(fast.trades, slow.trades, check_exact=True)
    assert fast.metrics == slow.metrics


def test_a_short_wiped_out_cannot_reopen_and_both_paths_log_the_same_trades() -> None:
    # Short at 100, the price triples: closing leaves the cash negative, so each later order to open is
    # refused (cash <= 0) and only logged; the trades are rebuilt by replaying those fills.
    o = np.array([100.0, 100.0, 300.0, 300.0, 310.0, 320.0, 330.0, 340.0])
    c = np.array([100.0, 100.0, 300.0, 300.0, 310.0, 320.0, 330.0, 340.0])
    p = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 0.0, 0.0])
    cfg = BacktestConfig(upper=0.5, lower=-0.5, fee_rate=0.001, allow_short=True)
    times = np.arange(len(c)) * MIN
    fast = run_vectorized(o, c, p, cfg, times=times)
    slow = run_event({"open_time": times, "open": o, "close": c}, p, cfg)
    assert fast.equity[-1] < 0 and np.count_nonzero(fast.position) == 1  # only the first short was held
    assert len(fast.trades) == 1 and fast.trades["pnl"].iloc[0] < -cfg.initial_cash
    pd.testing.assert_frame_equal(fast.trades, slow.trades, check_exact=True)
    assert np.array_equal(fast.equity, slow.equity) and fast.metrics == slow.metrics


def test_a_result_keeps_no_fill_log_much_bigger_than_its_rows() -> None:
    n = 5_000
    c = 100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.001, n)))
    p = np.where(np.arange(n) % 500 < 250, 1.0, -1.0)  # ten round trips in tables sized for 5,000 bars
    r = run_vectorized(np.r_[100.0, c[:-1]], c, p, BacktestConfig(upper=0.0, lower=0.0), interval_ms=MIN)
    fills = r.record.fills  # type: ignore[attr-defined]
    kept = fills.base if fills.base is not None else fills
    assert len(fills) == 21 and kept.shape[0] <= 4 * len(fills)  # the start, then an entry and an exit per trip
    assert len(r.trades) == 10


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0])
@pytest.mark.parametrize("column", ["open", "close"])
@pytest.mark.parametrize("pred", [math.nan, 1.0])  # flat throughout, or long from bar 1
def test_a_bad_price_anywhere_is_named(bad: float, column: str, pred: float) -> None:
    prices = {"open": np.full(6, 10.0), "close": np.full(6, 10.0)}
    prices[column][4] = bad
    with pytest.raises(ValueError, match=f"{column} price at bar 4 is {bad}"):
        run_vectorized(prices["open"], prices["close"], np.full(6, pred), BacktestConfig(upper=0.0, lower=0.0),
                       interval_ms=MIN)


def test_huge_finite_prices_are_not_mistaken_for_bad_ones() -> None:
    # Their sum overflows the kernel's quick check; the exact check clears them.
    r = run_vectorized([1e308] * 3, [1e308] * 3, [1.0, 0.0, 0.0], BacktestConfig(upper=0.5, lower=-0.5),
                       interval_ms=MIN)
    assert r.metrics["n_bars"] == 3 and len(r.trades) == 1


def test_bar_times_give_the_smallest_step_and_name_the_first_that_does_not_increase() -> None:
    times = np.arange(10_000, dtype=np.int64) * 2 * MIN
    times[5000:] -= MIN  # one step of MIN among steps of 2 * MIN
    assert checked_times(len(times), times, None)[1] == MIN
    bad = times.copy()
    bad[7000], bad[8000] = bad[6999], 0
    with pytest.raises(ValueError, match="do not at bar 7000"):
        checked_times(len(bad), bad, None)


def test_bad_inputs_are_named() -> None:
    cfg = BacktestConfig(upper=0.0, lower=0.0)
    with pytest.raises(ValueError, match="close price at bar 1 is nan"):
        run_vectorized([1.0, 1.0], [1.0, math.nan], [0.0, 0.0], cfg, interval_ms=MIN)
    with pytest.raises(ValueError, match="differ in length"):
        run_vectorized([1.0, 1.0], [1.0], [0.0, 0.0], cfg, interval_ms=MIN)
    with pytest.raises(ValueError, match="interval"):
        run_vectorized([1.0, 1.0], [1.0, 1.0], [0.0, 0.0], cfg)
    with pytest.raises(ValueError, match="must increase"):
        run_event({"open_time": [5, 5], "open": [1.0, 1.0], "close": [1.0, 1.0]}, [0.0, 0.0], cfg)
