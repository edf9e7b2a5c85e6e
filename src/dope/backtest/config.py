"""The settings of one threshold backtest: the trading strategy's own (:mod:`dope.trading.config`).

>>> BacktestConfig(upper=0.001, lower=-0.001).fee_rate
0.001
"""

from __future__ import annotations

from dope.trading.config import StrategyConfig

BacktestConfig = StrategyConfig
"""Thresholds, costs and sizing of a threshold backtest: a :class:`~dope.trading.config.StrategyConfig`,
so a backtest of the live trader runs ``config.trader.strategy()``."""

__all__ = ["BacktestConfig"]
