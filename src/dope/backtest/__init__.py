"""DOPE's backtester: threshold strategies on stored bars, a vectorized and an event path, one answer.

Semantics (the same in every path and in the live paper trader; see ``docs/backtesting.md``):

* ``prediction[t]`` is known at the close of bar ``t`` (computed from data up to ``t``);
  NaN means "no prediction" and holds the position.
* At that close the threshold strategy decides: ``prediction > upper`` -> long;
  ``prediction < lower`` -> flat (short with ``allow_short``); otherwise hold.
* The order fills at the **open of bar t+1**: buys at ``open * (1 + s)``, sells at
  ``open * (1 - s)`` (``s = slippage_bps / 1e4``), each fill paying ``fee_rate`` on its
  value. A reversal is two fills at that open (close, then open). A decision at the last
  bar never fills.
* A new position takes ``fraction`` of the cash, fee included (all-in by default):
  value ``fraction * cash / (1 + fee_rate)``, quantity ``value / fill price``.
* Equity is ``cash + position * close`` at every bar's close; trades record entry and exit
  bars, times, prices, fees and P&L; the open position at the end is a trade marked at the
  last close (``is_open``, no exit fee).

>>> from dope.backtest import BacktestConfig, run_vectorized, run_event
>>> cfg = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.001)
>>> bars = {"open_time": [0, 60_000, 120_000], "open": [10.0, 10.0, 11.0], "close": [10.0, 11.0, 12.0]}
>>> a = run_vectorized(bars["open"], bars["close"], [1.0, -1.0, 0.0], cfg, times=bars["open_time"])
>>> b = run_event(bars, [1.0, -1.0, 0.0], cfg)
>>> a.equity.tolist() == b.equity.tolist(), len(a.trades)
(True, 1)
"""

from dope.backtest.config import BacktestConfig
from dope.backtest.event import make_trader, run_event
from dope.backtest.metrics import METRIC_NAMES, compute_metrics, periods_per_year
from dope.backtest.result import TRADE_COLUMNS, BacktestResult
from dope.backtest.vectorized import (
    buy_and_hold,
    run_vectorized,
    sweep,
    sweep_equity,
    threshold_pairs,
    zero_baseline,
)

__all__ = ["METRIC_NAMES", "TRADE_COLUMNS", "BacktestConfig", "BacktestResult", "buy_and_hold",
           "compute_metrics", "make_trader", "periods_per_year", "run_event", "run_vectorized", "sweep",
           "sweep_equity", "threshold_pairs", "zero_baseline"]
