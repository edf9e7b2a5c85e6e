"""The vectorized path: one compiled pass over the bars per backtest, and a compiled threshold grid.

:func:`backtest_kernel` is a plain loop over the bars that does what the event path does: the
order decided at a close executes at the next open (the trading rule,
:func:`dope.trading.rule.decide` and :func:`~dope.trading.rule.execute`), and every bar's equity
is marked at the close and folded into the metric sums (:func:`dope.backtest.metrics.fold_bar`).
Both paths run the same compiled functions on the same numbers in the same order, so they agree
to the bit. Holding a position, only two prediction levels matter (:func:`order_levels`), so the
loop's one data-dependent branch is taken once an order.

The kernel writes nothing per bar: it logs only what changes at a fill (the bar, and the
cash and position from then on). :class:`FillLog` rebuilds equity, position and the trades
from that log when asked, the trades by replaying the logged fills with the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd
from numba.extending import register_jitable

from dope.backtest.config import BacktestConfig
from dope.backtest.metrics import (
    METRIC_NAMES,
    EquitySums,
    TradeSums,
    counted,
    finish_metrics,
    fold_bar,
    fold_entry,
    fold_exit,
    fold_unmoved,
    start_equity_sums,
    start_trade_sums,
)
from dope.backtest.result import TRADE_DTYPE, BacktestResult, trades_frame
from dope.trading.accounting import HOLD, change_levels, mark, trade_pnl, trade_return
from dope.trading.rule import Costs, Leg, Position, Thresholds, decide, execute, flat
from dope.types import FloatArray, IntArray

Table = npt.NDArray[np.void]

#: A row of the fill log: from bar ``bar`` on, the account holds ``cash`` and ``position`` (signed units).
FILL_DTYPE: Final = np.dtype([("bar", np.int64), ("cash", np.float64), ("position", np.float64)])

#: The fill log starts with room for a fill every this many bars.
FILL_ROOM: Final = 16

_N_EQUITY_SUMS: Final = len(EquitySums._fields)
_N_TRADE_SUMS: Final = len(TradeSums._fields)


#: What the kernel does with a bar, decided at the bar before: mark its close and fold it (``MARK_BAR``),
#: fold it as the bar before (``UNMOVED_BAR``: flat with cash, the equity stays), or first fill at its open
#: the order the close before decided, then mark and fold it (``FILL_BAR``).
MARK_BAR: Final = 0
UNMOVED_BAR: Final = 1
FILL_BAR: Final = 2


@numba.njit(cache=True, error_model="numpy")
def backtest_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, thresholds: Thresholds,
                    costs: Costs, cash0: float, fills: Table) -> tuple[int, EquitySums, TradeSums, bool]:
    """One backtest in one pass: (rows of ``fills`` written, equity sums, trade sums, whether the prices
    passed the quick check of :func:`note_prices`; when not, the rest means nothing).

    Each bar is a ``step``: :data:`MARK_BAR`, :data:`UNMOVED_BAR` or :data:`FILL_BAR`. A prediction past
    the levels of the position held decides an order, which fills at the next bar's open. ``fills``
    (``FILL_DTYPE``) receives the fill log, as many rows as it has room for (the count returned is of all
    of them; an empty log is the sweep's). Every bar's open is read (for the price check) so that the
    open of a fill bar is in the cache when the fill needs it.
    """
    n = close.shape[0]
    position = flat(cash0)
    sums, traded = start_equity_sums(cash0), start_trade_sums()
    lowest, total = math.inf, 0.0
    if fills.shape[0] > 0:
        fills[0].bar, fills[0].cash, fills[0].position = 0, cash0, 0.0
    n_fills = 1
    above, below = order_levels(position, thresholds)
    held, since, n_exposed = 0.0, 0, 0  # signed units held, from bar `since`; bars closed holding units
    order, step = HOLD, FILL_BAR  # the first bar is folded in full, as a fill bar (its order fills nothing)
    for t in range(n):
        lowest, total = note_prices(lowest, total, open_[t], close[t])
        if step == MARK_BAR:
            sums = fold_bar(sums, mark(position.cash, held, close[t]))
        elif step == UNMOVED_BAR:
            sums = fold_unmoved(sums)
        else:
            before = position
            position, closed, opened = execute(position, order, open_[t], costs)
            if closed.side != 0 or opened.side != 0:
                traded = fold_fill(traded, before, closed, opened)
                if held != 0.0:
                    n_exposed += t - since
                held, since = position.direction * position.qty, t
                if n_fills < fills.shape[0]:
                    row = fills[n_fills]
                    row.bar, row.cash, row.position = t, position.cash, held
                n_fills += 1
                above, below = order_levels(position, thresholds)
            sums = fold_bar(sums, mark(position.cash, held, close[t]))
            step = UNMOVED_BAR if held == 0.0 and position.cash > 0.0 else MARK_BAR
        if pred[t] > above or pred[t] < below:  # an order (a NaN prediction makes none); rarely true
            order, step = decide(pred[t], position.direction, thresholds), FILL_BAR
    if held != 0.0:
        n_exposed += n - since
    return n_fills, counted(sums, n, n_exposed), traded, lowest > 0.0 and total < math.inf


@register_jitable
def note_prices(lowest: float, total: float, open_price: float, close_price: float) -> tuple[float, float]:
    """The quick price check, one bar more: every price was finite and > 0 if the lowest is > 0 and the sum
    of the products ``open * close`` finite (a NaN or an infinity reaches it; a product or sum that
    overflows only calls for the exact check)."""
    lower = open_price if open_price < close_price else close_price
    return (lower if lower < lowest else lowest), total + open_price * close_price


@register_jitable
def order_levels(position: Position, thresholds: Thresholds) -> tuple[float, float]:
    """(above, below): holding ``position``, only predictions above or below these make an order."""
    return change_levels(position.direction, thresholds.upper, thresholds.lower, thresholds.allow_short)


@register_jitable
def fold_fill(traded: TradeSums, before: Position, closed: Leg, opened: Leg) -> TradeSums:
    """The trade sums after an order filled: the trade it closed (if any), then the one it opened."""
    if closed.side != 0:
        pnl = closed_pnl(before, closed)
        traded = fold_exit(traded, closed.qty, closed.price, closed.fee, pnl,
                           trade_return(pnl, before.qty, before.entry_price))
    if opened.side != 0:
        traded = fold_entry(traded, opened.qty, opened.price, opened.fee)
    return traded


@register_jitable
def closed_pnl(before: Position, closed: Leg) -> float:
    """P&L of the trade that ``closed`` ended (``before``: the position it closed), both fees paid."""
    return trade_pnl(before.direction, before.qty, before.entry_price, closed.price, before.entry_fee, closed.fee)


@numba.njit(cache=True, error_model="numpy")
def trade_table(open_: FloatArray, close: FloatArray, pred: FloatArray, fills: Table, thresholds: Thresholds,
                costs: Costs) -> Table:
    """The trades (``TRADE_DTYPE``, times not set) of a kernel run, rebuilt from its fill log: each logged
    fill replayed with the rule, its order the one the previous bar's prediction asked for, so every
    number is the kernel's own; the open trade last, marked at the last close with no exit fee."""
    table = np.empty(fills.shape[0], TRADE_DTYPE)
    position = flat(fills[0].cash)
    k = 0
    for row in range(1, fills.shape[0]):
        t = fills[row].bar
        before = position
        position, closed, opened = execute(position, decide(pred[t - 1], position.direction, thresholds),
                                           open_[t], costs)
        if closed.side != 0:
            _exit(table, k, t, before, closed.price, closed.fee, closed_pnl(before, closed))
            k += 1
        if opened.side != 0:
            _entry(table, k, t, opened)
    if position.direction != 0:
        last = close[close.shape[0] - 1]
        pnl = trade_pnl(position.direction, position.qty, position.entry_price, last, position.entry_fee, 0.0)
        _exit(table, k, -1, position, last, 0.0, pnl)
        table[k].is_open = True
        k += 1
    return table[:k].copy()


@numba.njit(cache=True)
def _entry(table: Table, k: int, t: int, opened: Leg) -> None:
    """Write trade ``k``'s entry: ``opened``, at bar ``t``."""
    table[k].direction = opened.side
    table[k].entry_bar = t
    table[k].qty = opened.qty
    table[k].entry_price = opened.price
    table[k].entry_fee = opened.fee


@numba.njit(cache=True)
def _exit(table: Table, k: int, t: int, before: Position, price: float, fee: float, pnl: float) -> None:
    """Write trade ``k``'s exit at bar ``t`` (``before``: the position it closed)."""
    table[k].exit_bar = t
    table[k].exit_price = price
    table[k].exit_fee = fee
    table[k].pnl = pnl
    table[k]["return"] = trade_return(pnl, before.qty, before.entry_price)
    table[k].is_open = False


@numba.njit(cache=True)
def equity_from_fills(close: FloatArray, fills: Table) -> FloatArray:
    """Equity per bar from the fill log, marked exactly as the kernel marks it."""
    n = close.shape[0]
    equity = np.empty(n)
    for k in range(fills.shape[0]):
        end = fills[k + 1].bar if k + 1 < fills.shape[0] else n
        cash, held = fills[k].cash, fills[k].position
        for t in range(fills[k].bar, end):
            equity[t] = mark(cash, held, close[t])
    return equity


def position_from_fills(n: int, fills: Table) -> FloatArray:
    """Position per bar from the fill log: each fill's position until the next fill."""
    return np.repeat(fills["position"], np.diff(np.append(fills["bar"], n)))


@numba.njit(cache=True, parallel=True)
def _sweep_kernel(open_: FloatArray, close: FloatArray, pred: FloatArray, uppers: FloatArray,
                  lowers: FloatArray, allow_short: bool, costs: Costs, cash0: float) -> tuple[FloatArray, FloatArray]:
    """Every (upper, lower) pair in one call: per pair the equity sums and the trade sums, as rows."""
    g = uppers.shape[0]
    equity = np.empty((g, _N_EQUITY_SUMS))
    trades = np.empty((g, _N_TRADE_SUMS))
    no_log = np.empty(0, FILL_DTYPE)
    for k in numba.prange(g):
        _, sums, traded, _ = backtest_kernel(open_, close, pred, Thresholds(uppers[k], lowers[k], allow_short),
                                             costs, cash0, no_log)
        equity[k] = np.array(sums)
        trades[k] = np.array(traded)
    return equity, trades


@numba.njit(cache=True)
def first_bad_price(open_: FloatArray, close: FloatArray) -> int:
    """Index of the first bar whose open or close is not a finite positive number, else -1."""
    for t in range(close.shape[0]):
        if not (0.0 < open_[t] < math.inf and 0.0 < close[t] < math.inf):
            return t
    return -1


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
    _check_prices(o, c)
    return o, c, p


def _check_prices(o: FloatArray, c: FloatArray) -> None:
    """Raise naming the first price that is not a finite number > 0, if any."""
    bad = first_bad_price(o, c)
    if bad >= 0:
        raise _bad_price(o, c, bad)


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
class FillLog:
    """A vectorized run's inputs and fill log, from which its per-bar arrays and trades are rebuilt."""

    open: FloatArray
    close: FloatArray
    prediction: FloatArray
    fills: Table
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
        table = trade_table(self.open, self.close, self.prediction, self.fills, self.config.thresholds(),
                            self.config.costs())
        return trades_frame(_with_times(table, self._bar_time))

    def _bar_time(self, bars: IntArray) -> IntArray:
        """Open times of the given bars (without building every bar's time)."""
        return self.stamps[bars] if self.stamps is not None else bars * self.interval_ms


def _backtest(o: FloatArray, c: FloatArray, p: FloatArray, config: BacktestConfig
              ) -> tuple[Table, EquitySums, TradeSums]:
    """The kernel on arrays of one length: fill log, equity sums and trade sums (a bad price raises).

    The log starts with room for a fill every 16 bars (memory the allocator reuses from run to
    run); a run with more fills runs again with room for one at every bar.
    """
    rows = len(c) // FILL_ROOM + 2
    while True:
        fills = np.empty(rows, FILL_DTYPE)
        n_fills, sums, traded, prices_pass = backtest_kernel(o, c, p, config.thresholds(), config.costs(),
                                                             config.initial_cash, fills)
        if not prices_pass:
            _check_prices(o, c)
        if n_fills <= rows:
            return _fitted(fills, n_fills), sums, traded
        rows = len(c) + 1


def _fitted(table: Table, rows: int) -> Table:
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
    fills, sums, traded = _backtest(o, c, p, config)
    metrics = finish_metrics(sums, traded, config.initial_cash, interval)
    return BacktestResult(config, interval, FillLog(o, c, p, fills, config, stamps, interval), traded.fees,
                          metrics)


def _with_times(table: Table, bar_time: Callable[[IntArray], IntArray]) -> Table:
    """Fill the entry/exit time columns from the bar indexes (-1 stays -1)."""
    table["entry_time"] = bar_time(table["entry_bar"])
    exit_ = table["exit_bar"]
    table["exit_time"] = np.where(exit_ >= 0, bar_time(np.maximum(exit_, 0)), -1)
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
    eq, tr = _sweep_kernel(o, c, p, ups, lows, config.allow_short, config.costs(), config.initial_cash)
    rows = [finish_metrics(EquitySums(*eq[k].tolist()), TradeSums(*tr[k].tolist()), config.initial_cash, interval)
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
    for k, (upper, lower) in enumerate(pairs):
        fills, _, _ = _backtest(o, c, p, config.with_thresholds(upper, lower))
        out[k] = equity_from_fills(c, fills)
    return out
