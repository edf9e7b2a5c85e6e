"""The vectorized path: one compiled pass over the bars per backtest, and a compiled threshold grid.

The kernel runs the trader core's own arithmetic (:mod:`dope.trading.accounting`,
compiled by numba) in the same order as the event path, so both give the same bits. It
writes nothing per bar: it folds each bar into the metric sums and logs only what
changes at a fill (the trades, and the cash and position from that bar on), from which
:class:`~dope.backtest.result.BacktestResult` rebuilds equity and position when asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.metrics import (
    METRIC_NAMES,
    EquitySums,
    finish_metrics,
    fold_bar,
    start_sums,
    stats_from_sums,
    sums_row,
    trade_stats_from_sums,
    trade_sums,
)
from dope.backtest.result import TRADE_COLUMNS, BacktestResult, trades_from_array
from dope.trading import accounting

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_signal = accounting.signal
_change_levels = accounting.change_levels
_close = accounting.close_position
_open = accounting.open_position
_pnl = accounting.trade_pnl
_ret = accounting.trade_return
_mark = accounting.mark
_HOLD = accounting.HOLD
_N_COLS = len(TRADE_COLUMNS)
(_DIRECTION, _ENTRY_BAR, _EXIT_BAR, _ENTRY_TIME, _EXIT_TIME, _QTY, _ENTRY_PRICE, _EXIT_PRICE, _ENTRY_FEE,
 _EXIT_FEE, _PNL, _RETURN, _IS_OPEN) = (TRADE_COLUMNS.index(name) for name in (
    "direction", "entry_bar", "exit_bar", "entry_time", "exit_time", "qty", "entry_price", "exit_price",
    "entry_fee", "exit_fee", "pnl", "return", "is_open"))
#: Columns of the fill log: the bar from which the cash and the position hold.
_FROM_BAR, _CASH, _POSITION = range(3)

#: (lowest price, sum of prices) seen so far: see :func:`_check_prices`.
PriceChecks = tuple[float, float]

#: Trade rows the kernel starts with (fewer for fewer bars); the table doubles when full, and growing
#: copies it, so the start is big enough for most runs over a year of 10-second bars.
START_TRADE_ROWS = 1 << 17


@numba.njit(cache=True, inline="always")
def _fill(pending: int, d: int, q_abs: float, cash: float, o: float, slippage: float, fee_rate: float,
          fraction: float) -> tuple[float, int, float, float, float, float, float]:
    """Move from direction ``d`` to ``pending`` at open ``o``: the paper broker's rule.

    Returns cash, direction, quantity, then price and fee of the exit and of the entry
    (NaN where that fill did not happen).
    """
    x_price = x_fee = e_price = e_fee = math.nan
    if d != 0:
        cash, x_price, _, x_fee = _close(cash, d, q_abs, o, slippage, fee_rate)
        d = 0
    if pending != 0 and cash > 0:
        cash, q_abs, e_price, _, e_fee = _open(cash, pending, o, slippage, fee_rate, fraction)
        d = pending
    return cash, d, q_abs, x_price, x_fee, e_price, e_fee


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


@numba.njit(cache=True, inline="always")
def _check_prices(checks: PriceChecks, o: float, c: float) -> PriceChecks:
    """Fold a bar's prices into (lowest, sum): every price was finite and > 0 iff the lowest is > 0 and the
    sum finite (NaN and infinity reach the sum). A sum that overflows only calls for the exact check."""
    lowest, total = checks
    return min(lowest, min(o, c)), total + (o + c)


@numba.njit(cache=True, inline="always")
def _run_bars(t: np.uint64, n: np.uint64, held: bool, cash: float, qty: float, d: int, open_: FloatArray,
              close: FloatArray, pred: FloatArray, upper: float, lower: float, allow_short: bool,
              sums: EquitySums, checks: PriceChecks) -> tuple[np.uint64, int, EquitySums, PriceChecks]:
    """Mark and fold bars from ``t`` with the cash and position fixed, until a bar's prediction asks for
    another direction: returns the next bar and that direction (``HOLD`` when the bars ran out).

    Called with a constant ``held`` (False: flat, the equity is the cash), so each call site
    compiles to its own loop. Indexes are unsigned so the loop carries no negative-index
    wraparound, and it tests only the prediction levels that can change direction ``d``.
    """
    above, below = _change_levels(d, upper, lower, allow_short)
    while t < n:
        checks = _check_prices(checks, open_[t], close[t])
        sums = fold_bar(sums, _mark(cash, qty, close[t]), qty) if held else fold_bar(sums, cash, 0.0)
        prediction = pred[t]
        t += np.uint64(1)
        if prediction > above or prediction < below:
            return t, _signal(prediction, upper, lower, allow_short), sums, checks
    return t, _HOLD, sums, checks


#: What a run carries from bar to bar: cash, quantity (unsigned), direction, pending direction, fees paid.
Book = tuple[float, float, int, int, float]


@numba.njit(cache=True, error_model="numpy")
def _run_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float, lower: float,
                allow_short: bool, fee_rate: float, slippage: float, fraction: float, cash0: float
                ) -> tuple[FloatArray, int, FloatArray, int, FloatArray, float, bool]:
    """One backtest in one pass: returns the trades table (times not set) and its row count, the fill log
    and its row count, the equity sums (``EquityStats`` order), the fees, and whether the prices passed
    the quick check (when not, :func:`first_bad_price` decides).

    The bars run in spans that stop when a table is full; the tables grow between spans
    (growing them inside the loop would cost reference counting on every fill).
    """
    n = np.uint64(close.shape[0])
    rows = min(close.shape[0], START_TRADE_ROWS)
    trades, fills = np.empty((rows + 2, _N_COLS)), np.empty((2 * rows + 2, 3))
    fills[0, _FROM_BAR], fills[0, _CASH], fills[0, _POSITION] = 0.0, cash0, 0.0
    nt, nf = 0, 1
    book: Book = (cash0, 0.0, 0, _HOLD, 0.0)
    sums, checks = start_sums(cash0), (np.inf, 0.0)
    t = np.uint64(0)
    while True:
        t, book, sums, checks, nt, nf = _run_span(t, n, open_, close, pred, upper, lower, allow_short, fee_rate,
                                                  slippage, fraction, book, sums, checks, trades, nt, fills, nf)
        if t >= n:
            break
        trades, fills = _grow(trades), _grow(fills)
    d = book[2]
    if d != 0:
        _finish(trades, nt, -1, close[n - np.uint64(1)], 0.0)
        trades[nt, _IS_OPEN] = 1.0
        nt += 1
    lowest, total = checks
    return trades, nt, fills, nf, sums_row(sums, close.shape[0]), book[4], lowest > 0.0 and total < np.inf


@numba.njit(cache=True, error_model="numpy")
def _run_span(t: np.uint64, n: np.uint64, open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float,
              lower: float, allow_short: bool, fee_rate: float, slippage: float, fraction: float, book: Book,
              sums: EquitySums, checks: PriceChecks, trades: FloatArray, nt: int, fills: FloatArray, nf: int
              ) -> tuple[np.uint64, Book, EquitySums, PriceChecks, int, int]:
    """Bars from ``t`` until the end, or until a table has no room for the next fill (a pending order)."""
    cash, q_abs, d, pending, fees = book
    qty = d * q_abs
    while t < n:
        if pending != _HOLD:
            if nt + 2 > trades.shape[0] or nf + 1 > fills.shape[0]:
                break
            cash, d, q_abs, xp, xf, ep, ef = _fill(pending, d, q_abs, cash, open_[t], slippage, fee_rate,
                                                   fraction)
            if not math.isnan(xp):
                fees += xf
                _finish(trades, nt, int(t), xp, xf)
                nt += 1
            if not math.isnan(ep):
                fees += ef
                _start(trades, nt, d, int(t), q_abs, ep, ef)
            qty = d * q_abs
            fills[nf, _FROM_BAR], fills[nf, _CASH], fills[nf, _POSITION] = t, cash, qty
            nf += 1
        if d == 0:
            t, pending, sums, checks = _run_bars(t, n, False, cash, qty, d, open_, close, pred, upper, lower,
                                                 allow_short, sums, checks)
        else:
            t, pending, sums, checks = _run_bars(t, n, True, cash, qty, d, open_, close, pred, upper, lower,
                                                 allow_short, sums, checks)
    return t, (cash, q_abs, d, pending, fees), sums, checks, nt, nf


@numba.njit(cache=True, inline="always")
def _start(trades: FloatArray, k: int, d: int, t: int, qty: float, price: float, fee: float) -> None:
    trades[k, _DIRECTION], trades[k, _ENTRY_BAR], trades[k, _QTY] = d, t, qty
    trades[k, _ENTRY_PRICE], trades[k, _ENTRY_FEE] = price, fee


@numba.njit(cache=True, inline="always")
def _finish(trades: FloatArray, k: int, t: int, price: float, fee: float) -> None:
    pnl = _pnl(int(trades[k, _DIRECTION]), trades[k, _QTY], trades[k, _ENTRY_PRICE], price,
               trades[k, _ENTRY_FEE], fee)
    trades[k, _EXIT_BAR], trades[k, _EXIT_PRICE], trades[k, _EXIT_FEE], trades[k, _PNL] = t, price, fee, pnl
    trades[k, _RETURN] = _ret(pnl, trades[k, _QTY], trades[k, _ENTRY_PRICE])
    trades[k, _IS_OPEN] = 0.0


@numba.njit(cache=True)
def _table_sums(trades: FloatArray) -> FloatArray:
    """:func:`trade_sums` of a raw trades table."""
    return trade_sums(trades[:, _QTY], trades[:, _ENTRY_PRICE], trades[:, _EXIT_PRICE], trades[:, _PNL],
                      trades[:, _RETURN], trades[:, _IS_OPEN])


@numba.njit(cache=True)
def equity_from_fills(close: FloatArray, fills: FloatArray) -> FloatArray:
    """Equity per bar from the fill log, marked exactly as the kernel marks it."""
    n = close.shape[0]
    equity = np.empty(n)
    for k in range(fills.shape[0]):
        end = int(fills[k + 1, _FROM_BAR]) if k + 1 < fills.shape[0] else n
        cash, qty = fills[k, _CASH], fills[k, _POSITION]
        for t in range(int(fills[k, _FROM_BAR]), end):
            equity[t] = _mark(cash, qty, close[t])
    return equity


def position_from_fills(n: int, fills: FloatArray) -> FloatArray:
    """Position per bar from the fill log: each fill's position until the next fill."""
    starts = fills[:, _FROM_BAR].astype(np.int64)
    return np.repeat(fills[:, _POSITION], np.diff(np.append(starts, n)))


@numba.njit(cache=True, parallel=True)
def _sweep_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, uppers: FloatArray,
                  lowers: FloatArray, allow_short: bool, fee_rate: float, slippage: float, fraction: float,
                  cash0: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Every (upper, lower) pair in one call: per pair the equity sums, the trade sums and the fees."""
    g = uppers.shape[0]
    eq_stats = np.empty((g, 8))
    tr_stats = np.empty((g, 5))
    fees = np.empty(g)
    for k in numba.prange(g):
        trades, nt, _, _, sums, fees[k], _ = _run_kernel(open_, close, pred, uppers[k], lowers[k], allow_short,
                                                        fee_rate, slippage, fraction, cash0)
        eq_stats[k] = sums
        tr_stats[k] = _table_sums(trades[:nt])
    return eq_stats, tr_stats, fees


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


def checked_times(n: int, times: npt.ArrayLike | None, interval_ms: int | None) -> tuple[IntArray | None, int]:
    """The bars' open times (None when not given) and the bar interval (inferred from the times if need be)."""
    if times is None:
        if interval_ms is None:
            raise ValueError("give the bar times or interval_ms (the metrics need the bar interval)")
        return None, interval_ms
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


def bar_times(n: int, times: npt.ArrayLike | None, interval_ms: int | None) -> tuple[IntArray, int]:
    """Open times of the bars (one interval apart from 0 when not given) and the bar interval."""
    stamps, interval = checked_times(n, times, interval_ms)
    return (stamps if stamps is not None else spaced_times(n, interval)), interval


def spaced_times(n: int, interval_ms: int) -> IntArray:
    """``n`` open times one interval apart from 0 (bars given without their times)."""
    return np.arange(n, dtype=np.int64) * interval_ms


@dataclass(frozen=True)
class FillRecord:
    """A vectorized run's per-bar arrays and trades, rebuilt from its fill log and raw trades table."""

    close: FloatArray
    fills: FloatArray
    trade_table: FloatArray
    stamps: IntArray | None
    interval_ms: int

    def times(self) -> IntArray:
        return self.stamps if self.stamps is not None else spaced_times(len(self.close), self.interval_ms)

    def equity(self) -> FloatArray:
        return equity_from_fills(self.close, self.fills)

    def position(self) -> FloatArray:
        return position_from_fills(len(self.close), self.fills)

    def trades(self) -> pd.DataFrame:
        return trades_from_array(_with_times(self.trade_table.copy(), self._bar_time))

    def _bar_time(self, bars: IntArray) -> IntArray:
        """Open times of the given bars (without building every bar's time)."""
        return self.stamps[bars] if self.stamps is not None else bars * self.interval_ms


def _backtest(o: FloatArray, c: FloatArray, p: FloatArray, config: BacktestConfig
              ) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """The kernel on checked-length arrays: trades table, fill log, equity sums and fees (bad prices raise)."""
    trades, nt, fills, nf, sums, fees, ok = _run_kernel(o, c, p, config.upper, config.lower, config.allow_short,
                                                        config.fee_rate, config.slippage, config.fraction,
                                                        config.initial_cash)
    if not ok:
        check_inputs(o, c, p)  # raises, naming the first bad price (or passes: the quick sum overflowed)
    return _fitted(trades, nt), _fitted(fills, nf), sums, fees


def _fitted(table: FloatArray, rows: int) -> FloatArray:
    """The first ``rows`` of ``table``: a view, or a copy when the view would keep 4x its size alive."""
    return table[:rows] if 4 * rows >= table.shape[0] else table[:rows].copy()


def run_vectorized(open: npt.ArrayLike, close: npt.ArrayLike, prediction: npt.ArrayLike,
                   config: BacktestConfig, *, times: npt.ArrayLike | None = None,
                   interval_ms: int | None = None) -> BacktestResult:
    """Backtest thresholds on aligned per-bar arrays in one compiled pass (see :mod:`dope.backtest`).

    The metrics are computed in the pass; equity, position and the trades frame are built
    on first use.

    >>> r = run_vectorized([10.0, 10.0, 11.0], [10.0, 11.0, 12.0], [1.0, 0.0, 0.0],
    ...                    BacktestConfig(upper=0.5, lower=-0.5, fee_rate=0.0), interval_ms=60_000)
    >>> r.equity.tolist(), r.trades["entry_price"].tolist()
    ([10000.0, 11000.0, 12000.0], [10.0])
    """
    o, c, p = as_arrays(open, close, prediction)
    stamps, interval = checked_times(len(c), times, interval_ms)
    trades, fills, sums, fees = _backtest(o, c, p, config)
    metrics = finish_metrics(stats_from_sums(sums), trade_stats_from_sums(_table_sums(trades), fees),
                             config.initial_cash, interval)
    return BacktestResult(config, interval, FillRecord(c, fills, trades, stamps, interval), fees, metrics)


def _with_times(table: FloatArray, bar_time: Callable[[IntArray], IntArray]) -> FloatArray:
    """Fill the entry/exit time columns from the bar indexes (-1 stays -1)."""
    entry, exit_ = table[:, _ENTRY_BAR].astype(np.int64), table[:, _EXIT_BAR].astype(np.int64)
    table[:, _ENTRY_TIME] = bar_time(entry)
    table[:, _EXIT_TIME] = np.where(exit_ >= 0, bar_time(np.maximum(exit_, 0)), -1)
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
    pair: ``upper``, ``lower`` and the columns of :data:`dope.backtest.metrics.METRIC_NAMES`,
    equal to :func:`run_vectorized`'s metrics for that pair.
    """
    o, c, p = check_inputs(open, close, prediction)
    _, interval = checked_times(len(c), times, interval_ms)
    pairs = threshold_pairs(uppers, lowers)
    ups = np.array([u for u, _ in pairs], dtype=np.float64)
    lows = np.array([lo for _, lo in pairs], dtype=np.float64)
    eq, tr, fees = _sweep_kernel(o, c, p, ups, lows, config.allow_short, config.fee_rate, config.slippage,
                                 config.fraction, config.initial_cash)
    rows = [finish_metrics(stats_from_sums(eq[k]), trade_stats_from_sums(tr[k], float(fees[k])),
                           config.initial_cash, interval) for k in range(len(pairs))]
    frame = pd.DataFrame(rows, columns=list(METRIC_NAMES))
    frame.insert(0, "lower", lows)
    frame.insert(0, "upper", ups)
    return frame


def sweep_equity(open: npt.ArrayLike, close: npt.ArrayLike, prediction: npt.ArrayLike,
                 pairs: Sequence[tuple[float, float]], config: BacktestConfig) -> FloatArray:
    """Equity per bar of each (upper, lower) pair: an array of shape ``(len(pairs), n_bars)``."""
    o, c, p = check_inputs(open, close, prediction)
    out = np.empty((len(pairs), len(c)))
    for k, (upper, lower) in enumerate(pairs):
        _, fills, _, _ = _backtest(o, c, p, config.with_thresholds(upper, lower))
        out[k] = equity_from_fills(c, fills)
    return out
