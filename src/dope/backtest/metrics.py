"""Performance metrics of an equity curve and its trades.

Returns are simple per-bar returns of the equity marked at each close, the first one
against the initial cash. Crypto trades around the clock, so a year has
``365 * 24 * 3600 * 1000 / interval_ms`` bars (35,040 for 15-minute bars, 3,153,600 for
10-second bars) and Sharpe and Sortino are scaled by its square root. The risk-free rate
is zero. Sharpe uses the sample standard deviation (``ddof=1``); Sortino divides the mean
return by the downside deviation ``sqrt(mean(min(r, 0)**2))`` over all bars. CAGR
compounds over ``n_bars / periods_per_year`` years; Calmar is CAGR over the maximum
drawdown (a positive fraction of the running peak, the initial cash included). Turnover
is the traded value (quantity times fill price, entries and exits) over the mean equity.
Trade statistics count closed round trips only; the open position at the end is in the
equity, not in them.

The equity sums are kept in eight lanes, bar ``t`` in lane ``t % 8``, and the lanes are added
pairwise at the end (:func:`dope.backtest.lanes.lane_sum`). Every path folds the same bars
into the same lanes in the same order, so the event path, the kernel and the sweep agree to
the bit, and the kernel folds eight bars per vector instruction.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.backtest.lanes import (
    WIDTH,
    Lanes,
    add_where,
    address,
    bits_gt,
    bits_lt,
    bits_ne,
    lane,
    lane_sum,
    lanes_from,
    load,
    load_part,
    previous_lanes,
    splat,
)

YEAR_MS: Final = 365 * 24 * 3600 * 1000

METRIC_NAMES: Final = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "n_trades",
                       "win_rate", "avg_trade_return", "avg_trade_pnl", "exposure", "turnover", "fees_paid",
                       "final_equity", "n_bars")

FloatArray = npt.NDArray[np.float64]


class EquityStats(NamedTuple):
    """Sums over the bars of an equity curve, from which the metrics follow."""

    n_bars: int
    final_equity: float
    sum_r: float
    sum_r2: float
    sum_down2: float
    max_drawdown: float
    n_exposed: int
    sum_equity: float


class TradeStats(NamedTuple):
    """Sums over the fills and closed trades."""

    n_closed: int
    n_wins: int
    sum_pnl: float
    sum_ret: float
    traded_value: float
    fees: float


def periods_per_year(interval_ms: int) -> float:
    """Bars in a 365-day year of round-the-clock trading.

    >>> periods_per_year(900_000), periods_per_year(10_000)
    (35040.0, 3153600.0)
    """
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
    return YEAR_MS / interval_ms


def bar_returns(equity: FloatArray, initial_cash: float) -> FloatArray:
    """Simple return of each bar, the first against the initial cash."""
    previous = np.concatenate(([initial_cash], equity[:-1]))
    return np.asarray(equity / previous - 1.0, dtype=np.float64)


#: The running sums of :func:`fold_lanes`: peak, max drawdown, the drawdown floor ``peak * (1 - max
#: drawdown)`` (kept, not recomputed per bar), the previous equity, then in lanes (bar ``t`` in lane
#: ``t % 8``) the sums of returns, of squared returns, of squared negative returns and of equity, and
#: last the bars exposed.
EquitySums = tuple[float, float, float, float, Lanes, Lanes, Lanes, Lanes, int]


@numba.njit(cache=True, inline="always")
def start_sums(cash0: float) -> EquitySums:
    """The sums before the first bar: the initial cash is the first peak and the first 'previous' equity."""
    zero = splat(0.0)
    return cash0, 0.0, cash0, cash0, zero, zero, zero, zero, 0


@numba.njit(cache=True, inline="always")
def fold_lanes(sums: EquitySums, equity: Lanes, first: int, last: int) -> EquitySums:
    """Fold the equity of lanes ``first`` to ``last`` of a group of ``WIDTH`` bars (the group starts at a
    multiple of ``WIDTH``) into the sums; an unchanged equity adds no return.

    Each lane's sums take their bars in order, and the peak and drawdown walk the lanes in
    order (only in a group where some equity passed the peak or the drawdown floor), so any
    walk over the same bars in aligned groups gives the same bits.
    """
    peak, mdd, floor, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed = sums
    valid = lanes_from(first, last)
    before = previous_lanes(equity, prev, first)
    moved = valid & bits_ne(equity, before)
    if moved:
        r = equity / before - splat(1.0)
        r2 = r * r
        sum_r, sum_r2 = add_where(sum_r, r, moved), add_where(sum_r2, r2, moved)
        sum_d2 = add_where(sum_d2, r2, moved & bits_lt(r, splat(0.0)))
        if moved & (bits_gt(equity, splat(peak)) | bits_lt(equity, splat(floor))):
            for j in range(WIDTH):
                if moved >> j & 1:
                    peak, mdd, floor = step_drawdown(peak, mdd, floor, lane(equity, j))
    sum_eq = add_where(sum_eq, equity, valid)
    return peak, mdd, floor, lane(equity, last), sum_r, sum_r2, sum_d2, sum_eq, n_exposed


@numba.njit(cache=True, inline="always")
def fold_unmoved(sums: EquitySums, equity: Lanes, first: int, last: int) -> EquitySums:
    """Fold lanes ``first`` to ``last`` of a group whose equity is the previous bar's in each of them (a flat
    stretch after its first bar): the bits :func:`fold_lanes` gives, which finds no return there (for an
    equity that is a number: NaN differs even from itself, and only a refused price makes one)."""
    peak, mdd, floor, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed = sums
    sum_eq = add_where(sum_eq, equity, lanes_from(first, last))
    return peak, mdd, floor, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed


@numba.njit(cache=True, inline="always")
def fold_return(sums: EquitySums, equity: float, j: int) -> EquitySums:
    """Fold the return of one bar, in lane ``j``, that ends at ``equity``: the bits :func:`fold_lanes` gives
    that bar, except its equity sum (folded with its group by :func:`fold_unmoved`)."""
    peak, mdd, floor, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed = sums
    if equity != prev:
        r = equity / prev - 1.0
        r2 = r * r
        bit = 1 << j
        sum_r, sum_r2 = add_where(sum_r, splat(r), bit), add_where(sum_r2, splat(r2), bit)
        sum_d2 = add_where(sum_d2, splat(r2), bit if r < 0.0 else 0)
        peak, mdd, floor = step_drawdown(peak, mdd, floor, equity)
    return peak, mdd, floor, equity, sum_r, sum_r2, sum_d2, sum_eq, n_exposed


@numba.njit(cache=True, inline="always")
def step_drawdown(peak: float, mdd: float, floor: float, eq: float) -> tuple[float, float, float]:
    """Peak, max drawdown and floor after an equity that moved (the one step every walk takes)."""
    if eq > peak:
        peak = eq
        floor = peak * (1.0 - mdd)
    elif eq < floor:
        mdd = 1.0 - eq / peak
        floor = peak * (1.0 - mdd)
    return peak, mdd, floor


@numba.njit(cache=True, inline="always")
def add_exposed(sums: EquitySums, bars: int) -> EquitySums:
    """The sums with ``bars`` more bars exposed."""
    return sums[:8] + (sums[8] + bars,)


@numba.njit(cache=True)
def sums_row(sums: EquitySums, n_bars: int) -> FloatArray:
    """The sums as an array in ``EquityStats`` order (the lanes added as :func:`lane_sum` adds them)."""
    _, mdd, _, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed = sums
    return np.array([n_bars, prev, lane_sum(sum_r), lane_sum(sum_r2), lane_sum(sum_d2), mdd, n_exposed,
                     lane_sum(sum_eq)], dtype=np.float64)


@numba.njit(cache=True)
def equity_sums(equity: FloatArray, position: FloatArray, cash0: float) -> FloatArray:
    """The equity sums (``EquityStats`` order) of a curve, folded exactly as the backtest kernel folds them."""
    n = equity.shape[0]
    full = n - n % WIDTH
    sums, curve = start_sums(cash0), address(equity)
    for g in range(0, full, WIDTH):
        sums = fold_lanes(sums, load(curve, g), 0, WIDTH - 1)
    if full < n:
        sums = fold_lanes(sums, load_part(curve, full, n - full, 0.0), 0, n - full - 1)
    return sums_row(add_exposed(sums, int(np.count_nonzero(position))), n)


#: The running sums over the fills: closed trades, wins, sum of P&L, of returns, and the traded value.
TradeSums = tuple[int, int, float, float, float]


@numba.njit(cache=True, inline="always")
def start_trade_sums() -> TradeSums:
    """The trade sums before the first fill."""
    return 0, 0, 0.0, 0.0, 0.0


@numba.njit(cache=True, inline="always")
def fold_entry(sums: TradeSums, qty: float, price: float) -> TradeSums:
    """The sums after a trade's entry: its value is traded."""
    n_closed, n_wins, sum_pnl, sum_ret, traded = sums
    return n_closed, n_wins, sum_pnl, sum_ret, traded + qty * price


@numba.njit(cache=True, inline="always")
def fold_exit(sums: TradeSums, qty: float, price: float, pnl: float, ret: float) -> TradeSums:
    """The sums after a trade's exit: its value is traded and the trade counts as closed."""
    n_closed, n_wins, sum_pnl, sum_ret, traded = sums
    return n_closed + 1, n_wins + (pnl > 0.0), sum_pnl + pnl, sum_ret + ret, traded + qty * price


@numba.njit(cache=True)
def trade_sums_row(sums: TradeSums) -> FloatArray:
    """The trade sums as an array (the order :func:`trade_stats_from_sums` reads)."""
    return np.array(sums, dtype=np.float64)


@numba.njit(cache=True)
def trade_sums(qty: FloatArray, entry_price: FloatArray, exit_price: FloatArray, pnl: FloatArray,
               ret: FloatArray, is_open: FloatArray) -> FloatArray:
    """Closed trades, wins, sum of P&L, of returns and the traded value, folded trade by trade in order.

    Each trade's entry, then its exit when it is closed: the order in which the fills
    happened, as the backtest kernel folds them.
    """
    sums = start_trade_sums()
    for k in range(qty.shape[0]):
        sums = fold_entry(sums, qty[k], entry_price[k])
        if is_open[k] == 0.0:
            sums = fold_exit(sums, qty[k], exit_price[k], pnl[k], ret[k])
    return trade_sums_row(sums)


def stats_from_sums(row: FloatArray) -> EquityStats:
    """``EquityStats`` from the array the kernels return."""
    return EquityStats(int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]),
                       int(row[6]), float(row[7]))


def equity_stats(equity: FloatArray, initial_cash: float, position: FloatArray | None = None) -> EquityStats:
    """The sums behind the equity metrics (exposure unknown, -1, without ``position``)."""
    held = np.zeros(len(equity)) if position is None else np.ascontiguousarray(position, dtype=np.float64)
    stats = stats_from_sums(equity_sums(np.ascontiguousarray(equity, dtype=np.float64), held, initial_cash))
    return stats if position is not None else stats._replace(n_exposed=-1)


def trade_stats(trades: pd.DataFrame, fees: float | None = None) -> TradeStats:
    """The sums behind the trade metrics (``trades`` as in :class:`BacktestResult`; fees summed unless given)."""
    columns = [trades[name].to_numpy(dtype=np.float64)
               for name in ("qty", "entry_price", "exit_price", "pnl", "return", "is_open")]
    if fees is None:
        closed = ~trades["is_open"].to_numpy(dtype=bool)
        fees = float(trades["entry_fee"].sum() + trades["exit_fee"].to_numpy()[closed].sum())
    return trade_stats_from_sums(trade_sums(*columns), fees)


def trade_stats_from_sums(row: FloatArray, fees: float) -> TradeStats:
    """``TradeStats`` from :func:`trade_sums`' array and the fees paid."""
    return TradeStats(int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]), fees)


def finish_metrics(eq: EquityStats, tr: TradeStats, initial_cash: float, interval_ms: int) -> dict[str, float]:
    """The metric table from the sums (the one formula behind every path and the sweep)."""
    ppy = periods_per_year(interval_ms)
    n = eq.n_bars
    total = eq.final_equity / initial_cash - 1.0
    cagr = _cagr(eq.final_equity / initial_cash, n / ppy)
    mean = eq.sum_r / n if n else math.nan
    std = math.sqrt(max(0.0, (eq.sum_r2 - eq.sum_r * mean) / (n - 1))) if n > 1 else math.nan
    down = math.sqrt(eq.sum_down2 / n) if n else math.nan
    return {
        "total_return": total, "cagr": cagr,
        "sharpe": _ratio(mean, std) * math.sqrt(ppy), "sortino": _ratio(mean, down) * math.sqrt(ppy),
        "max_drawdown": eq.max_drawdown, "calmar": _ratio(cagr, eq.max_drawdown),
        "n_trades": float(tr.n_closed), "win_rate": _ratio(tr.n_wins, tr.n_closed),
        "avg_trade_return": _ratio(tr.sum_ret, tr.n_closed), "avg_trade_pnl": _ratio(tr.sum_pnl, tr.n_closed),
        "exposure": _ratio(eq.n_exposed, n) if eq.n_exposed >= 0 else math.nan,
        "turnover": _ratio(tr.traded_value, eq.sum_equity / n) if n else math.nan,
        "fees_paid": tr.fees, "final_equity": eq.final_equity, "n_bars": float(n),
    }


def compute_metrics(equity: FloatArray, interval_ms: int, trades: pd.DataFrame, *, initial_cash: float,
                    position: FloatArray | None = None, fees_paid: float | None = None) -> dict[str, float]:
    """Every metric of a backtest: see the module docstring for the definitions.

    ``position`` (signed units per bar) gives the exposure (NaN without it); ``fees_paid``
    overrides the sum of the trades' fees.
    """
    equity = np.asarray(equity, dtype=np.float64)
    tr = trade_stats(trades, fees_paid)
    return finish_metrics(equity_stats(equity, initial_cash, position), tr, initial_cash, interval_ms)


def _cagr(growth: float, years: float) -> float:
    if years <= 0:
        return math.nan
    if growth <= 0:
        return -1.0
    try:
        return float(growth ** (1.0 / years) - 1.0)
    except OverflowError:
        return math.inf


def _ratio(num: float, den: float) -> float:
    """``num / den``, NaN when the denominator is zero (or NaN)."""
    if den == 0 or math.isnan(den):
        return math.nan
    return num / den
