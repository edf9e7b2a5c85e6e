"""The vectorized path: one compiled pass over the bars per backtest, and a compiled threshold grid.

The kernel runs the trader core's own arithmetic (:mod:`dope.trading.accounting`,
compiled by numba) in the same order as the event path, so both give the same bits. It
writes nothing per bar: it folds the bars eight at a time into the metric sums (the lanes
of :mod:`dope.backtest.lanes`) and logs only what changes at a fill (the cash and position
from that bar on), from which :class:`~dope.backtest.result.BacktestResult` rebuilds equity,
position and the trades (replaying the fills with the kernel's own :func:`_fill`) when asked.
The loops pass the arrays on as plain addresses, so nothing in them counts references.
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
from dope.backtest.lanes import (
    ALL_LANES,
    WIDTH,
    Lanes,
    address,
    bits_gt,
    bits_lt,
    first_lane,
    lane,
    lane_min,
    load,
    load_one,
    load_part,
    prefetch,
    splat,
    store_one,
)
from dope.backtest.metrics import (
    METRIC_NAMES,
    EquitySums,
    TradeSums,
    add_exposed,
    finish_metrics,
    fold_entry,
    fold_exit,
    fold_lanes,
    fold_return,
    fold_unmoved,
    start_sums,
    start_trade_sums,
    stats_from_sums,
    sums_row,
    trade_stats_from_sums,
    trade_sums_row,
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
_FILL_COLS = 3

#: The addresses of the open, close and prediction arrays (:func:`~dope.backtest.lanes.address`).
Inputs = tuple[int, int, int]

#: (lowest price, sum of prices) seen so far, lane by lane: see :func:`_check_prices`.
PriceChecks = tuple[Lanes, Lanes]

#: Fill-log rows the kernel starts with (fewer for fewer bars); the log doubles when full, and growing
#: copies it, so the start is big enough for most runs over a year of 10-second bars.
START_FILL_ROWS = 1 << 18

#: Bars ahead of the one a loop reads that it asks the CPU to start loading (4 KB of each array): the
#: inputs stream in while the kernel works on fills, which are not bound by memory.
AHEAD = 512


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
def _check_prices(checks: PriceChecks, o: Lanes, c: Lanes) -> PriceChecks:
    """Fold a group's prices into (lowest, sum), lane by lane: every price was finite and > 0 iff every
    lowest is > 0 and every sum finite (NaN and infinity reach the sum). A sum that overflows only
    calls for the exact check, and a bar folded twice changes nothing."""
    lowest, total = checks
    return lane_min(lowest, lane_min(o, c)), total + (o + c)


@numba.njit(cache=True, inline="always")
def _prices_passed(checks: PriceChecks) -> bool:
    lowest, total = checks
    return bool(bits_gt(lowest, splat(0.0)) == ALL_LANES and bits_lt(total, splat(np.inf)) == ALL_LANES)


@numba.njit(cache=True, inline="always")
def _run_bars(t: int, n: int, held: bool, cash: float, qty: float, d: int, inputs: Inputs, upper: float,
              lower: float, allow_short: bool, sums: EquitySums, checks: PriceChecks
              ) -> tuple[int, int, EquitySums, PriceChecks]:
    """Mark and fold bars from ``t`` with the cash and position fixed, until a bar's prediction asks for
    another direction: returns the next bar and that direction (``HOLD`` when the bars ran out).

    The bars go ``WIDTH`` at a time, in groups that start at multiples of ``WIDTH`` (the lanes of
    :func:`~dope.backtest.metrics.fold_lanes`); the first group starts at ``t``'s lane and
    the group with the turning prediction ends at its lane. Called with a constant ``held``
    (False: flat, the equity is the cash), so each call site compiles to its own loop, which
    tests only the prediction levels that can change direction ``d``.
    """
    above, below = _change_levels(d, upper, lower, allow_short)
    above_v, below_v, cash_v, qty_v = splat(above), splat(below), splat(cash), splat(qty)
    first = t & (WIDTH - 1)
    g = t - first
    o, c, p = _load_group(inputs, g, n)
    checks = _check_prices(checks, o, c)
    turns = (bits_gt(p, above_v) | bits_lt(p, below_v)) >> first << first
    last = first_lane(turns) if turns else min(WIDTH, n - g) - 1
    if held:
        sums = fold_lanes(sums, cash_v + qty_v * c, first, last)
    else:  # the fill bar may change the equity, the bars after it cannot
        sums = fold_unmoved(fold_return(sums, cash, first), cash_v, first, last)
    if not turns:
        open_, close, pred = inputs
        full = n - n % WIDTH
        g += WIDTH
        equity = cash_v
        while g < full:
            _prefetch_ahead(inputs, g)
            o, c, p = load(open_, g), load(close, g), load(pred, g)
            checks = _check_prices(checks, o, c)
            equity = cash_v + qty_v * c if held else cash_v
            turns = bits_gt(p, above_v) | bits_lt(p, below_v)
            if turns:
                last = first_lane(turns)
                break
            sums = _fold_stretch(sums, held, equity, 0, WIDTH - 1)
            g += WIDTH
        if not turns and g < n:  # the last bars, fewer than a group
            o, c, p = _load_group(inputs, g, n)
            checks = _check_prices(checks, o, c)
            turns = bits_gt(p, above_v) | bits_lt(p, below_v)
            last = first_lane(turns) if turns else n - g - 1
            equity = cash_v + qty_v * c if held else cash_v
        if g < n:  # the group the stretch ends in
            sums = _fold_stretch(sums, held, equity, 0, last)
    end = g + last + 1 if turns else n
    direction = _signal(lane(p, last), upper, lower, allow_short) if turns else _HOLD
    return end, direction, add_exposed(sums, end - t if qty != 0.0 else 0), checks


@numba.njit(cache=True, inline="always")
def _fold_stretch(sums: EquitySums, held: bool, equity: Lanes, first: int, last: int) -> EquitySums:
    """Fold lanes ``first`` to ``last`` of a group inside a stretch (after its first bar): a held position's
    equity moves with the close, a flat one's is the cash, which moved only at the fill."""
    return fold_lanes(sums, equity, first, last) if held else fold_unmoved(sums, equity, first, last)


@numba.njit(cache=True, inline="always")
def _prefetch_ahead(inputs: Inputs, g: int) -> None:
    """Start loading the inputs ``AHEAD`` bars after bar ``g``."""
    open_, close, pred = inputs
    prefetch(open_, g + AHEAD)
    prefetch(close, g + AHEAD)
    prefetch(pred, g + AHEAD)


@numba.njit(cache=True, inline="always")
def _load_group(inputs: Inputs, g: int, n: int) -> tuple[Lanes, Lanes, Lanes]:
    """Open, close and prediction of the group of bars from ``g``; past the last bar, lanes that pass the
    price checks and never turn."""
    _prefetch_ahead(inputs, g)
    open_, close, pred = inputs
    if g + WIDTH <= n:
        return load(open_, g), load(close, g), load(pred, g)
    return load_part(open_, g, n - g, 1.0), load_part(close, g, n - g, 1.0), load_part(pred, g, n - g, math.nan)


#: What a run carries from bar to bar: cash, quantity (unsigned), direction, pending direction, fees
#: paid, and the open trade's entry price and fee.
Book = tuple[float, float, int, int, float, float, float]


@numba.njit(cache=True, error_model="numpy")
def _run_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float, lower: float,
                allow_short: bool, fee_rate: float, slippage: float, fraction: float, cash0: float
                ) -> tuple[FloatArray, int, FloatArray, FloatArray, float, bool]:
    """One backtest in one pass: returns the fill log and its row count, the equity sums (``EquityStats``
    order), the trade sums (:func:`trade_sums`' order), the fees, and whether the prices passed the
    quick check (when not, :func:`first_bad_price` decides).

    The bars run in spans that stop when the fill log is full; it grows between spans
    (growing it inside the loop would cost reference counting on every fill).
    """
    n = close.shape[0]
    fills = np.empty((min(n + 1, START_FILL_ROWS), _FILL_COLS))
    fills[0, _FROM_BAR], fills[0, _CASH], fills[0, _POSITION] = 0.0, cash0, 0.0
    nf = 1
    book: Book = (cash0, 0.0, 0, _HOLD, 0.0, math.nan, math.nan)
    sums, checks, traded = start_sums(cash0), (splat(np.inf), splat(0.0)), start_trade_sums()
    t = 0
    while True:
        t, book, sums, checks, traded, nf = _run_span(t, n, open_, close, pred, upper, lower, allow_short,
                                                      fee_rate, slippage, fraction, book, sums, checks, traded,
                                                      fills, nf)
        if t >= n:
            break
        fills = _grow(fills)
    return fills, nf, sums_row(sums, n), trade_sums_row(traded), book[4], _prices_passed(checks)


@numba.njit(cache=True, error_model="numpy")
def _run_span(t: int, n: int, open_: FloatArray, close: FloatArray, pred: FloatArray, upper: float,
              lower: float, allow_short: bool, fee_rate: float, slippage: float, fraction: float, book: Book,
              sums: EquitySums, checks: PriceChecks, traded: TradeSums, fills: FloatArray, nf: int
              ) -> tuple[int, Book, EquitySums, PriceChecks, TradeSums, int]:
    """Bars from ``t`` until the end, or until the fill log has no room for the next fill (a pending order).

    The flat and the held stretches run at their own call sites, each followed by its own
    fill, so every branch at a site goes the same way stretch after stretch (the branch
    predictor learns them, which it could not after a loop of varying length).
    """
    inputs = (address(open_), address(close), address(pred))
    n_fill_rows, fill_rows = fills.shape[0], address(fills)
    if book[3] != _HOLD and t < n:  # a fill that waited for the tables to grow
        book, traded, nf = _fill_logged(t, book, traded, inputs, slippage, fee_rate, fraction, fill_rows, nf)
    while t < n:
        if book[2] == 0:
            t, pending, sums, checks = _run_bars(t, n, False, book[0], 0.0, 0, inputs, upper, lower, allow_short,
                                                 sums, checks)
            book = book[:3] + (pending,) + book[4:]
            if pending == _HOLD or t >= n or nf >= n_fill_rows:
                break
            book, traded, nf = _fill_logged(t, book, traded, inputs, slippage, fee_rate, fraction, fill_rows, nf)
        if book[2] != 0:
            t, pending, sums, checks = _run_bars(t, n, True, book[0], book[2] * book[1], book[2], inputs, upper,
                                                 lower, allow_short, sums, checks)
            book = book[:3] + (pending,) + book[4:]
            if pending == _HOLD or t >= n or nf >= n_fill_rows:
                break
            book, traded, nf = _fill_logged(t, book, traded, inputs, slippage, fee_rate, fraction, fill_rows, nf)
    return t, book, sums, checks, traded, nf


@numba.njit(cache=True, inline="always")
def _fill_logged(t: int, book: Book, traded: TradeSums, inputs: Inputs, slippage: float, fee_rate: float,
                 fraction: float, fill_rows: int, nf: int) -> tuple[Book, TradeSums, int]:
    """The pending fill at bar ``t``'s open, folded into the trade sums and written to the fill log (at
    its :func:`address`, with room for it): the book, the trade sums and the log's row count."""
    after, (closed, exit_price, _, pnl, ret, opened) = _fill(book, load_one(inputs[0], t), slippage, fee_rate,
                                                             fraction)
    if closed:
        traded = fold_exit(traded, book[1], exit_price, pnl, ret)
    if opened:
        traded = fold_entry(traded, after[1], after[5])
    row = nf * _FILL_COLS
    store_one(fill_rows, row + _FROM_BAR, t)
    store_one(fill_rows, row + _CASH, after[0])
    store_one(fill_rows, row + _POSITION, after[2] * after[1])
    return after, traded, nf + 1


#: What a fill did to the trades: whether it closed one (then its exit price, exit fee, P&L and return),
#: and whether it opened one.
FillOutcome = tuple[bool, float, float, float, float, bool]


@numba.njit(cache=True, inline="always")
def _fill(book: Book, open_price: float, slippage: float, fee_rate: float, fraction: float
          ) -> tuple[Book, FillOutcome]:
    """The pending order filled at a bar's open by the paper broker's rule: close what is held, then open
    what is asked for when the cash is positive. The one fill rule of the kernel and of the replay
    that rebuilds its trades (:func:`trade_table`)."""
    cash, q_abs, d, pending, fees, entry_price, entry_fee = book
    closed, exit_price, exit_fee, pnl, ret = d != 0, math.nan, math.nan, math.nan, math.nan
    if closed:
        cash, exit_price, _, exit_fee = _close(cash, d, q_abs, open_price, slippage, fee_rate)
        fees += exit_fee
        pnl = _pnl(d, q_abs, entry_price, exit_price, entry_fee, exit_fee)
        ret = _ret(pnl, q_abs, entry_price)
        d = 0
    opened = pending != 0 and cash > 0
    if opened:
        cash, q_abs, entry_price, _, entry_fee = _open(cash, pending, open_price, slippage, fee_rate, fraction)
        fees += entry_fee
        d = pending
    return (cash, q_abs, d, _HOLD, fees, entry_price, entry_fee), (closed, exit_price, exit_fee, pnl, ret, opened)


@numba.njit(cache=True, error_model="numpy")
def trade_table(open_: FloatArray, close: FloatArray, pred: FloatArray, fills: FloatArray, upper: float,
                lower: float, allow_short: bool, fee_rate: float, slippage: float, fraction: float) -> FloatArray:
    """The raw trades table (``TRADE_COLUMNS``, times not set) of a kernel run, rebuilt from its fill log:
    each logged fill replayed with :func:`_fill`, its order the one the previous bar's prediction
    asked for, so every number is the kernel's own; the open trade last, marked at the last close."""
    table = np.empty((fills.shape[0], _N_COLS))
    rows = address(table)
    book: Book = (fills[0, _CASH], 0.0, 0, _HOLD, 0.0, math.nan, math.nan)
    nt = 0
    for k in range(1, fills.shape[0]):
        t = int(fills[k, _FROM_BAR])
        order = _signal(pred[t - 1], upper, lower, allow_short)
        after, (closed, exit_price, exit_fee, pnl, ret, opened) = _fill(book[:3] + (order,) + book[4:], open_[t],
                                                                        slippage, fee_rate, fraction)
        if closed:
            _finish(rows, nt, t, exit_price, exit_fee, pnl, ret)
            nt += 1
        if opened:
            _start(rows, nt, after[2], t, after[1], after[5], after[6])
        book = after
    _, q_abs, d, _, _, entry_price, entry_fee = book
    if d != 0:
        n = close.shape[0]
        pnl = _pnl(d, q_abs, entry_price, close[n - 1], entry_fee, 0.0)
        _finish(rows, nt, -1, close[n - 1], 0.0, pnl, _ret(pnl, q_abs, entry_price))
        table[nt, _IS_OPEN] = 1.0
        nt += 1
    return table[:nt].copy()


@numba.njit(cache=True, inline="always")
def _start(trades: int, k: int, d: int, t: int, qty: float, price: float, fee: float) -> None:
    """Write the entry of trade ``k`` (``trades``: the :func:`address` of the trades table)."""
    row = k * _N_COLS
    store_one(trades, row + _DIRECTION, d)
    store_one(trades, row + _ENTRY_BAR, t)
    store_one(trades, row + _QTY, qty)
    store_one(trades, row + _ENTRY_PRICE, price)
    store_one(trades, row + _ENTRY_FEE, fee)


@numba.njit(cache=True, inline="always")
def _finish(trades: int, k: int, t: int, price: float, fee: float, pnl: float, ret: float) -> None:
    """Write the exit of trade ``k`` with its P&L and return (``trades``: the :func:`address` of the table)."""
    row = k * _N_COLS
    store_one(trades, row + _EXIT_BAR, t)
    store_one(trades, row + _EXIT_PRICE, price)
    store_one(trades, row + _EXIT_FEE, fee)
    store_one(trades, row + _PNL, pnl)
    store_one(trades, row + _RETURN, ret)
    store_one(trades, row + _IS_OPEN, 0.0)


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
        _, _, eq_stats[k], tr_stats[k], fees[k], _ = _run_kernel(open_, close, pred, uppers[k], lowers[k],
                                                                allow_short, fee_rate, slippage, fraction, cash0)
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
    """(first bar whose time does not increase or -1, smallest step).

    The smallest step comes from a loop with no exit, which compiles to SIMD; only when it is
    not positive is the first bad bar searched for.
    """
    smallest = np.iinfo(np.int64).max
    for t in range(1, stamps.shape[0]):
        smallest = min(smallest, stamps[t] - stamps[t - 1])
    if smallest <= 0:
        for t in range(1, stamps.shape[0]):
            if stamps[t] <= stamps[t - 1]:
                return t, 0
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
    """A vectorized run's per-bar arrays and trades, rebuilt from its inputs and fill log."""

    open: FloatArray
    close: FloatArray
    prediction: FloatArray
    fills: FloatArray
    config: BacktestConfig
    stamps: IntArray | None
    interval_ms: int

    def times(self) -> IntArray:
        return self.stamps if self.stamps is not None else spaced_times(len(self.close), self.interval_ms)

    def equity(self) -> FloatArray:
        return equity_from_fills(self.close, self.fills)

    def position(self) -> FloatArray:
        return position_from_fills(len(self.close), self.fills)

    def trades(self) -> pd.DataFrame:
        cfg = self.config
        table = trade_table(self.open, self.close, self.prediction, self.fills, cfg.upper, cfg.lower,
                            cfg.allow_short, cfg.fee_rate, cfg.slippage, cfg.fraction)
        return trades_from_array(_with_times(table, self._bar_time))

    def _bar_time(self, bars: IntArray) -> IntArray:
        """Open times of the given bars (without building every bar's time)."""
        return self.stamps[bars] if self.stamps is not None else bars * self.interval_ms


def _backtest(o: FloatArray, c: FloatArray, p: FloatArray, config: BacktestConfig
              ) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """The kernel on checked-length arrays: fill log, equity sums, trade sums and fees (bad prices raise)."""
    fills, nf, sums, traded, fees, ok = _run_kernel(o, c, p, config.upper, config.lower, config.allow_short,
                                                    config.fee_rate, config.slippage, config.fraction,
                                                    config.initial_cash)
    if not ok:
        check_inputs(o, c, p)  # raises, naming the first bad price (or passes: the quick sum overflowed)
    return _fitted(fills, nf), sums, traded, fees


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
    fills, sums, traded, fees = _backtest(o, c, p, config)
    metrics = finish_metrics(stats_from_sums(sums), trade_stats_from_sums(traded, fees),
                             config.initial_cash, interval)
    return BacktestResult(config, interval, FillRecord(o, c, p, fills, config, stamps, interval), fees, metrics)


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
        fills, _, _, _ = _backtest(o, c, p, config.with_thresholds(upper, lower))
        out[k] = equity_from_fills(c, fills)
    return out
