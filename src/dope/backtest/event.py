"""The event path: the trader core driven bar by bar with a simulated clock, as the live trader runs it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.metrics import compute_metrics
from dope.backtest.result import BacktestResult, RecordedBars, trades_from_records
from dope.backtest.vectorized import bar_times, check_inputs
from dope.clock import SimulatedClock
from dope.trading import PaperBroker, Portfolio, ThresholdStrategy, Trader

Bars = pd.DataFrame | Mapping[str, npt.ArrayLike]


def make_trader(symbol: str, config: BacktestConfig, clock: SimulatedClock) -> Trader:
    """The trader core set up from a backtest config (paper broker, fresh portfolio)."""
    portfolio = Portfolio(config.initial_cash)
    return Trader(symbol, ThresholdStrategy.of(config.thresholds()), PaperBroker.of(portfolio, config.costs()),
                  portfolio, clock)


def run_event(bars: Bars, predictions: npt.ArrayLike, config: BacktestConfig, *,
              clock: SimulatedClock | None = None, interval_ms: int | None = None,
              symbol: str = "BACKTEST") -> BacktestResult:
    """Replay ``bars`` (``open_time``, ``open``, ``close``; ``close_time`` optional) through a :class:`Trader`.

    ``predictions[t]`` is the prediction known at the close of bar ``t`` (NaN: none). The
    clock moves to each bar's close time before the trader sees the bar.
    """
    open_time = np.ascontiguousarray(bars["open_time"], dtype=np.int64)
    o, c, p = check_inputs(bars["open"], bars["close"], predictions)
    stamps, interval = bar_times(len(c), open_time, interval_ms)
    close_time = _close_times(bars, stamps, interval)
    clock = clock if clock is not None else SimulatedClock(int(stamps[0]) if len(stamps) else 0)
    trader = make_trader(symbol, config, clock)
    equity, position = _drive(trader, clock, stamps, close_time, o, c, p)
    records = list(trader.portfolio.trades)
    last = trader.portfolio.open_trade(float(c[-1])) if len(c) else None
    trades = trades_from_records(records + ([last] if last is not None else []), stamps)
    fees = trader.portfolio.fees_paid
    metrics = compute_metrics(equity, interval, trades, initial_cash=config.initial_cash, position=position,
                              fees_paid=fees)
    return BacktestResult(config, interval, RecordedBars(stamps, equity, position, trades), fees, metrics)


def _close_times(bars: Bars, open_time: npt.NDArray[np.int64], interval_ms: int) -> npt.NDArray[np.int64]:
    if "close_time" in bars:
        return np.ascontiguousarray(bars["close_time"], dtype=np.int64)
    return open_time + (interval_ms - 1)


def _drive(trader: Trader, clock: SimulatedClock, open_time: npt.NDArray[np.int64],
           close_time: npt.NDArray[np.int64], o: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
           p: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The bar loop: the clock reaches the close, the bar fills and marks, the prediction decides."""
    portfolio = trader.portfolio
    equity: list[float] = []
    position: list[float] = []
    on_bar, on_prediction, advance = trader.on_bar, trader.on_prediction, clock.advance_to
    for t_open, t_close, op, cl, pred in zip(open_time.tolist(), close_time.tolist(), o.tolist(), c.tolist(),
                                             p.tolist(), strict=True):
        advance(t_close)
        on_bar(t_open, op, cl)
        equity.append(portfolio.equity(cl))
        position.append(portfolio.qty)
        on_prediction(pred)
    return np.array(equity, dtype=np.float64), np.array(position, dtype=np.float64)
