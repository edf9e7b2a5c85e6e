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

The sums behind the metrics are folded bar by bar, in bar order, by one compiled function
(:func:`fold_bar`), and fill by fill, in the order the fills happened (:func:`fold_entry`,
:func:`fold_exit`): inside the backtest kernel, and over the event path's equity curve and
trades, so every path gets the same bits.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numba
import numpy as np
import pandas as pd
from numba.extending import register_jitable

from dope.types import FloatArray

YEAR_MS: Final = 365 * 24 * 3600 * 1000

METRIC_NAMES: Final = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "n_trades",
                       "win_rate", "avg_trade_return", "avg_trade_pnl", "exposure", "turnover", "fees_paid",
                       "final_equity", "n_bars")



class EquitySums(NamedTuple):
    """Sums over the bars of an equity curve, from which the metrics follow, and the running peak.

    All are float64 (the counts too: exact below 2**53), so a row of a float array holds them.
    """

    n_bars: float
    final_equity: float  # the equity at the last close; the initial cash before the first bar
    sum_r: float
    sum_r2: float
    sum_down2: float
    max_drawdown: float
    n_exposed: float  # bars closed holding a position (-1: unknown)
    sum_equity: float
    peak: float
    floor: float  # peak * (1 - max_drawdown): an equity below it deepens the drawdown


class TradeSums(NamedTuple):
    """Sums over the fills and the closed trades (all float64, as :class:`EquitySums`)."""

    n_closed: float
    n_wins: float
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


@register_jitable
def start_equity_sums(cash0: float) -> EquitySums:
    """The sums before the first bar: the initial cash is the first peak and the first 'previous' equity."""
    return EquitySums(0.0, cash0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, cash0, cash0)


@register_jitable
def fold_bar(s: EquitySums, equity: float) -> EquitySums:
    """The sums after one more bar closing at ``equity`` (the bars are counted apart: :func:`counted`)."""
    r = equity / s.final_equity - 1.0
    r2 = r * r
    peak, floor, mdd = s.peak, s.floor, s.max_drawdown
    if equity > peak:
        peak = equity
        floor = peak * (1.0 - mdd)
    elif equity < floor:
        mdd = 1.0 - equity / peak
        floor = peak * (1.0 - mdd)
    return EquitySums(s.n_bars, equity, s.sum_r + r, s.sum_r2 + r2, s.sum_down2 + (r2 if r < 0.0 else 0.0), mdd,
                      s.n_exposed, s.sum_equity + equity, peak, floor)


@register_jitable
def fold_unmoved(s: EquitySums) -> EquitySums:
    """:func:`fold_bar` for a bar whose equity is the previous one's, a positive number (a flat bar after
    the first): the same bits, without the division. Its return is 0.0, which adds nothing to the
    return sums (never -0.0); it moves neither the peak nor the drawdown (the previous bar left
    them as this equity sets them); only its equity is summed."""
    return EquitySums(s.n_bars, s.final_equity, s.sum_r, s.sum_r2, s.sum_down2, s.max_drawdown, s.n_exposed,
                      s.sum_equity + s.final_equity, s.peak, s.floor)


@register_jitable
def counted(s: EquitySums, n_bars: int, n_exposed: int) -> EquitySums:
    """The sums with their bar counts: ``n_bars`` folded, ``n_exposed`` of them holding a position."""
    return EquitySums(float(n_bars), s.final_equity, s.sum_r, s.sum_r2, s.sum_down2, s.max_drawdown,
                      float(n_exposed), s.sum_equity, s.peak, s.floor)


@numba.njit(cache=True)
def equity_sums(equity: FloatArray, position: FloatArray, cash0: float) -> EquitySums:
    """The sums of a recorded equity curve (``position``: signed quantity per bar), folded as the kernel folds."""
    sums = start_equity_sums(cash0)
    exposed = 0
    for t in range(equity.shape[0]):
        sums = fold_bar(sums, equity[t])
        exposed += position[t] != 0.0
    return counted(sums, equity.shape[0], exposed)


@register_jitable
def start_trade_sums() -> TradeSums:
    """The trade sums before the first fill."""
    return TradeSums(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@register_jitable
def fold_entry(s: TradeSums, qty: float, price: float, fee: float) -> TradeSums:
    """The sums after a trade's entry: its value is traded, its fee paid."""
    return TradeSums(s.n_closed, s.n_wins, s.sum_pnl, s.sum_ret, s.traded_value + qty * price, s.fees + fee)


@register_jitable
def fold_exit(s: TradeSums, qty: float, price: float, fee: float, pnl: float, ret: float) -> TradeSums:
    """The sums after a trade's exit: its value is traded, its fee paid, and it counts as closed."""
    return TradeSums(s.n_closed + 1.0, s.n_wins + (1.0 if pnl > 0.0 else 0.0), s.sum_pnl + pnl, s.sum_ret + ret,
                     s.traded_value + qty * price, s.fees + fee)


def trade_sums(trades: pd.DataFrame) -> TradeSums:
    """The sums of a trades frame (as in :class:`BacktestResult`), folded fill by fill in order: each trade's
    entry, then its exit when it is closed, as the kernel folds them."""
    sums = start_trade_sums()
    columns = (trades[name].tolist() for name in ("qty", "entry_price", "entry_fee", "exit_price", "exit_fee",
                                                  "pnl", "return", "is_open"))
    for qty, entry_price, entry_fee, exit_price, exit_fee, pnl, ret, is_open in zip(*columns, strict=True):
        sums = fold_entry(sums, qty, entry_price, entry_fee)
        if not is_open:
            sums = fold_exit(sums, qty, exit_price, exit_fee, pnl, ret)
    return sums


def finish_metrics(eq: EquitySums, tr: TradeSums, initial_cash: float, interval_ms: int) -> dict[str, float]:
    """The metric table from the sums (the one formula behind every path and the sweep)."""
    ppy = periods_per_year(interval_ms)
    n = int(eq.n_bars)
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
    equity = np.ascontiguousarray(equity, dtype=np.float64)
    held = np.zeros(len(equity)) if position is None else np.ascontiguousarray(position, dtype=np.float64)
    eq = equity_sums(equity, held, initial_cash)
    if position is None:
        eq = eq._replace(n_exposed=-1.0)
    tr = trade_sums(trades)
    if fees_paid is not None:
        tr = tr._replace(fees=fees_paid)
    return finish_metrics(eq, tr, initial_cash, interval_ms)


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
