"""The vectorized path: one compiled pass over the bars per backtest, and a compiled threshold grid.

The kernels run the trader core's own arithmetic (:mod:`dope.trading.accounting`,
compiled by numba) in the same order as the event path, so both give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.metrics import (
    METRIC_NAMES,
    TradeStats,
    finish_metrics,
    fold_bar,
    stats_from_sums,
    trade_stats,
)
from dope.backtest.result import TRADE_COLUMNS, BacktestResult, trades_from_array
from dope.trading import accounting

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_signal = accounting.signal
_close = accounting.close_position
_open = accounting.open_position
_pnl = accounting.trade_pnl
_ret = accounting.trade_return
_mark = accounting.mark
_HOLD = accounting.HOLD
_N_COLS = len(TRADE_COLUMNS)


@numba.njit(cache=True, inline="always")
def _fill(pending: int, d: int, q_abs: float, cash: float, o: float, slippage: float, fee_rate: float,
          fraction: float) -> tuple[float, int, float, float, float, float, float, float, float]:
    """Move from direction ``d`` to ``pending`` at open ``o``: the paper broker's rule.

    Returns cash, direction, quantity, then price/value/fee of the exit and of the entry
    (NaN where that fill did not happen).
    """
    x_price = x_value = x_fee = e_price = e_value = e_fee = math.nan
    if d != 0:
        cash, x_price, x_value, x_fee = _close(cash, d, q_abs, o, slippage, fee_rate)
        d = 0
    if pending != 0 and cash > 0:
        cash, q_abs, e_price, e_value, e_fee = _open(cash, pending, o, slippage, fee_rate, fraction)
        d = pending
    return cash, d, q_abs, x_price, x_value, x_fee, e_price, e_value, e_fee


@numba.njit(cache=True)
def _grow(table: FloatArray) -> FloatArray:
    bigger = np.empty((2 * table.shape[0], table.shape[1]))
    bigger[: table.shape[0]] = table
    return bigger


@numba.njit(cache=True)
def first_bad_price(open_: FloatArray, close: FloatArray) -> int:
    """Index of the first bar whose open or close is not a finite positive number, else -1."""
    for t in range(close.shape[0]):
        if not (0.0 < open_[t] < np.inf and 0.0 < close[t] < np.inf):
            return t
    return -1


@numba.njit(cache=True)
def _run_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float, lower: float,
                allow_short: bool, fee_rate: float, slippage: float, fraction: float, cash0: float,
                equity: FloatArray, position: FloatArray) -> tuple[FloatArray, int, float, FloatArray, bool]:
    """One backtest: fills ``equity``/``position``; returns the trades (times not set), their count, fees,
    the equity sums and whether every price was finite and positive (the result is void when not).

    The bars run in spans that stop when the trades table is full; it grows between spans
    (growing it inside the loop would cost reference counting on every bar).
    """
    n = close.shape[0]
    trades = np.empty((1024, _N_COLS))
    # cash, qty, q_abs, fees, d, pending, nt, peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed, prev, ok
    state = np.array([cash0, 0.0, 0.0, 0.0, 0.0, _HOLD, 0.0, cash0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, cash0, 1.0])
    t = _run_span(0, open_, close, pred, upper, lower, allow_short, fee_rate, slippage, fraction, equity,
                  position, trades, state)
    while t < n:
        trades = _grow(trades)
        t = _run_span(t, open_, close, pred, upper, lower, allow_short, fee_rate, slippage, fraction, equity,
                      position, trades, state)
    nt = int(state[6])
    if state[4] != 0.0:
        _finish(trades, nt, -1, close[n - 1], 0.0)
        trades[nt, 12] = 1.0
        nt += 1
    sums = np.array([n, state[14], state[9], state[10], state[11], state[8], state[13], state[12]])
    return trades, nt, state[3], sums, state[15] == 1.0


@numba.njit(cache=True)
def _run_span(t0: int, open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float, lower: float,
              allow_short: bool, fee_rate: float, slippage: float, fraction: float, equity: FloatArray,
              position: FloatArray, trades: FloatArray, state: FloatArray) -> int:
    """Bars from ``t0`` until the end or a full trades table; the state is read from and saved to ``state``."""
    cash, qty, q_abs, fees = state[0], state[1], state[2], state[3]
    d, pending, nt = int(state[4]), int(state[5]), int(state[6])
    peak, mdd, sum_r, sum_r2, sum_d2, sum_eq = state[7], state[8], state[9], state[10], state[11], state[12]
    n_exposed, prev, ok = int(state[13]), state[14], state[15] == 1.0
    room = trades.shape[0] - 2
    t = t0
    while t < close.shape[0] and nt < room:
        o, c = open_[t], close[t]
        ok &= (o > 0.0) & (o < np.inf) & (c > 0.0) & (c < np.inf)
        if pending != _HOLD:
            cash, d, q_abs, xp, _, xf, ep, _, ef = _fill(pending, d, q_abs, cash, o, slippage, fee_rate,
                                                          fraction)
            if not math.isnan(xp):
                fees += xf
                _finish(trades, nt, t, xp, xf)
                nt += 1
            if not math.isnan(ep):
                fees += ef
                _start(trades, nt, d, t, q_abs, ep, ef)
            qty = d * q_abs
            pending = _HOLD
        eq = _mark(cash, qty, c)
        equity[t] = eq
        position[t] = qty
        peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed, prev = fold_bar(
            eq, qty, prev, peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed)
        s = _signal(pred[t], upper, lower, allow_short)
        if s != _HOLD and s != d:
            pending = s
        t += 1
    state[0], state[1], state[2], state[3], state[4], state[5], state[6] = cash, qty, q_abs, fees, d, pending, nt
    state[7], state[8], state[9], state[10], state[11], state[12] = peak, mdd, sum_r, sum_r2, sum_d2, sum_eq
    state[13], state[14], state[15] = n_exposed, prev, 1.0 if ok else 0.0
    return t


@numba.njit(cache=True, inline="always")
def _start(trades: FloatArray, k: int, d: int, t: int, qty: float, price: float, fee: float) -> None:
    trades[k, 0], trades[k, 1], trades[k, 5], trades[k, 6], trades[k, 8] = d, t, qty, price, fee


@numba.njit(cache=True, inline="always")
def _finish(trades: FloatArray, k: int, t: int, price: float, fee: float) -> None:
    pnl = _pnl(int(trades[k, 0]), trades[k, 5], trades[k, 6], price, trades[k, 8], fee)
    trades[k, 2], trades[k, 7], trades[k, 9], trades[k, 10] = t, price, fee, pnl
    trades[k, 11], trades[k, 12] = _ret(pnl, trades[k, 5], trades[k, 6]), 0.0


@numba.njit(cache=True, parallel=True)
def _sweep_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, uppers: FloatArray,
                  lowers: FloatArray, allow_short: bool, fee_rate: float, slippage: float, fraction: float,
                  cash0: float) -> tuple[FloatArray, FloatArray]:
    """Every (upper, lower) pair in one call: per pair the equity sums and the trade sums."""
    g = uppers.shape[0]
    eq_stats = np.empty((g, 8))
    tr_stats = np.empty((g, 6))
    for k in numba.prange(g):
        _sweep_one(open_, close, pred, uppers[k], lowers[k], allow_short, fee_rate, slippage, fraction, cash0,
                   eq_stats[k], tr_stats[k])
    return eq_stats, tr_stats


@numba.njit(cache=True)
def _sweep_one(open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float, lower: float,
               allow_short: bool, fee_rate: float, slippage: float, fraction: float, cash0: float,
               eq_out: FloatArray, tr_out: FloatArray) -> None:
    """One backtest reduced to sums on the fly (same fills and folds as ``_run_kernel``)."""
    cash, qty, q_abs, fees, traded = cash0, 0.0, 0.0, 0.0, 0.0
    d, pending = 0, _HOLD
    entry_price = entry_fee = 0.0
    n_closed = n_wins = 0
    sum_pnl = sum_ret = 0.0
    peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed, prev = cash0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, cash0
    for t in range(close.shape[0]):
        if pending != _HOLD:
            closed_dir = d
            cash, d, q_abs_new, xp, xv, xf, ep, ev, ef = _fill(pending, d, q_abs, cash, open_[t], slippage,
                                                               fee_rate, fraction)
            if not math.isnan(xp):
                fees += xf
                traded += xv
                pnl = _pnl(closed_dir, q_abs, entry_price, xp, entry_fee, xf)
                n_closed += 1
                n_wins += pnl > 0
                sum_pnl += pnl
                sum_ret += _ret(pnl, q_abs, entry_price)
            if not math.isnan(ep):
                fees += ef
                traded += ev
                entry_price, entry_fee = ep, ef
            q_abs = q_abs_new
            qty = d * q_abs
            pending = _HOLD
        peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed, prev = fold_bar(
            _mark(cash, qty, close[t]), qty, prev, peak, mdd, sum_r, sum_r2, sum_d2, sum_eq, n_exposed)
        s = _signal(pred[t], upper, lower, allow_short)
        if s != _HOLD and s != d:
            pending = s
    eq_out[0], eq_out[1], eq_out[2], eq_out[3] = close.shape[0], prev, sum_r, sum_r2
    eq_out[4], eq_out[5], eq_out[6], eq_out[7] = sum_d2, mdd, n_exposed, sum_eq
    tr_out[0], tr_out[1], tr_out[2], tr_out[3], tr_out[4], tr_out[5] = (n_closed, n_wins, sum_pnl, sum_ret,
                                                                         traded, fees)


def as_arrays(open_: npt.ArrayLike, close: npt.ArrayLike,
              prediction: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Contiguous float64 views (copies only when needed), refusing mismatched lengths."""
    o, c, p = (np.ascontiguousarray(a, dtype=np.float64) for a in (open_, close, prediction))
    if not len(o) == len(c) == len(p):
        raise ValueError(f"open, close and prediction differ in length: {len(o)}, {len(c)}, {len(p)}")
    return o, c, p


def check_inputs(open_: npt.ArrayLike, close: npt.ArrayLike,
                 prediction: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`as_arrays`, refusing prices that are not finite and positive."""
    o, c, p = as_arrays(open_, close, prediction)
    bad = first_bad_price(o, c)
    if bad >= 0:
        raise _bad_price(o, c, bad)
    return o, c, p


def _bad_price(o: FloatArray, c: FloatArray, t: int) -> ValueError:
    name, value = ("open", o[t]) if not 0.0 < o[t] < np.inf else ("close", c[t])
    return ValueError(f"{name} price at bar {t} is {float(value)}: prices must be finite and > 0")


@numba.njit(cache=True)
def _check_times(stamps: IntArray) -> tuple[int, int]:
    """(first bar whose time does not increase or -1, smallest step)."""
    smallest = np.iinfo(np.int64).max
    for t in range(1, stamps.shape[0]):
        step = stamps[t] - stamps[t - 1]
        if step <= 0:
            return t, 0
        smallest = min(smallest, step)
    return -1, smallest


def bar_times(n: int, times: npt.ArrayLike | None, interval_ms: int | None) -> tuple[IntArray, int]:
    """Open times of the bars and the bar interval (inferred from the times when not given)."""
    if times is None:
        if interval_ms is None:
            raise ValueError("give the bar times or interval_ms (the metrics need the bar interval)")
        return np.arange(n, dtype=np.int64) * interval_ms, interval_ms
    stamps = np.ascontiguousarray(times, dtype=np.int64)
    if len(stamps) != n:
        raise ValueError(f"{len(stamps)} times for {n} bars")
    bad, smallest = _check_times(stamps)
    if bad >= 0:
        raise ValueError(f"bar times must increase; they do not at bar {bad}")
    if interval_ms is None:
        if n < 2:
            raise ValueError("cannot infer the bar interval from fewer than 2 bars; give interval_ms")
        interval_ms = int(smallest)
    return stamps, interval_ms


def run_vectorized(open: npt.ArrayLike, close: npt.ArrayLike, prediction: npt.ArrayLike,
                   config: BacktestConfig, *, times: npt.ArrayLike | None = None,
                   interval_ms: int | None = None) -> BacktestResult:
    """Backtest thresholds on aligned per-bar arrays in one compiled pass (see :mod:`dope.backtest`).

    >>> r = run_vectorized([10.0, 10.0, 11.0], [10.0, 11.0, 12.0], [1.0, 0.0, 0.0],
    ...                    BacktestConfig(upper=0.5, lower=-0.5, fee_rate=0.0), interval_ms=60_000)
    >>> r.equity.tolist(), r.trades["entry_price"].tolist()
    ([10000.0, 11000.0, 12000.0], [10.0])
    """
    o, c, p = as_arrays(open, close, prediction)
    stamps, interval = bar_times(len(c), times, interval_ms)
    equity, position = np.empty(len(c)), np.empty(len(c))
    table, nt, fees, sums, ok = _run_kernel(o, c, p, config.upper, config.lower, config.allow_short,
                                            config.fee_rate, config.slippage, config.fraction,
                                            config.initial_cash, equity, position)
    if not ok:
        check_inputs(o, c, p)  # raises, naming the first bad price
    trades = trades_from_array(_with_times(table[:nt], stamps))
    metrics = finish_metrics(stats_from_sums(sums), trade_stats(trades)._replace(fees=fees),
                             config.initial_cash, interval)
    return BacktestResult(config, interval, stamps, equity, position, trades, fees, metrics)


def _with_times(table: FloatArray, stamps: IntArray) -> FloatArray:
    """Fill the entry/exit time columns from the bar indexes (-1 stays -1)."""
    entry, exit_ = table[:, 1].astype(np.int64), table[:, 2].astype(np.int64)
    table[:, 3] = stamps[entry]
    table[:, 4] = np.where(exit_ >= 0, stamps[np.maximum(exit_, 0)], -1)
    return table


def buy_and_hold(open: npt.ArrayLike, close: npt.ArrayLike, config: BacktestConfig, *,
                 times: npt.ArrayLike | None = None, interval_ms: int | None = None) -> BacktestResult:
    """The always-long baseline under the same rules: bought at the second bar's open, never sold."""
    n = len(np.asarray(close))
    return run_vectorized(open, close, np.full(n, np.inf), config, times=times, interval_ms=interval_ms)


def zero_baseline(open: npt.ArrayLike, close: npt.ArrayLike, config: BacktestConfig, *,
                  times: npt.ArrayLike | None = None, interval_ms: int | None = None) -> BacktestResult:
    """The zero-return model's baseline: it never trades, so the equity stays at the initial cash."""
    n = len(np.asarray(close))
    return run_vectorized(open, close, np.full(n, np.nan), config, times=times, interval_ms=interval_ms)


def threshold_pairs(uppers: Sequence[float], lowers: Sequence[float]) -> list[tuple[float, float]]:
    """Every (upper, lower) pair of the grid with ``lower <= upper``."""
    return [(float(u), float(lo)) for u in uppers for lo in lowers if lo <= u]


def sweep(open: npt.ArrayLike, close: npt.ArrayLike, prediction: npt.ArrayLike, uppers: Sequence[float],
          lowers: Sequence[float], config: BacktestConfig, *, times: npt.ArrayLike | None = None,
          interval_ms: int | None = None) -> pd.DataFrame:
    """The metrics of every threshold pair (``lower <= upper``) in one compiled, parallel call.

    Costs, sizing and direction come from ``config`` (its thresholds are ignored). One row per
    pair: ``upper``, ``lower`` and the columns of :data:`dope.backtest.metrics.METRIC_NAMES`.
    """
    o, c, p = check_inputs(open, close, prediction)
    _, interval = bar_times(len(c), times, interval_ms)
    pairs = threshold_pairs(uppers, lowers)
    ups = np.array([u for u, _ in pairs], dtype=np.float64)
    lows = np.array([lo for _, lo in pairs], dtype=np.float64)
    eq, tr = _sweep_kernel(o, c, p, ups, lows, config.allow_short, config.fee_rate, config.slippage,
                           config.fraction, config.initial_cash)
    rows = [finish_metrics(stats_from_sums(eq[k]), _trade_stats(tr[k]), config.initial_cash, interval)
            for k in range(len(pairs))]
    frame = pd.DataFrame(rows, columns=list(METRIC_NAMES))
    frame.insert(0, "lower", lows)
    frame.insert(0, "upper", ups)
    return frame


def sweep_equity(open: npt.ArrayLike, close: npt.ArrayLike, prediction: npt.ArrayLike,
                 pairs: Sequence[tuple[float, float]], config: BacktestConfig) -> FloatArray:
    """Equity per bar of each (upper, lower) pair: an array of shape ``(len(pairs), n_bars)``."""
    o, c, p = check_inputs(open, close, prediction)
    out = np.empty((len(pairs), len(c)))
    position = np.empty(len(c))
    for k, (upper, lower) in enumerate(pairs):
        cfg = config.with_thresholds(upper, lower)
        _run_kernel(o, c, p, cfg.upper, cfg.lower, cfg.allow_short, cfg.fee_rate, cfg.slippage, cfg.fraction,
                    cfg.initial_cash, out[k], position)
    return out


def _trade_stats(row: FloatArray) -> TradeStats:
    return TradeStats(int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]))
