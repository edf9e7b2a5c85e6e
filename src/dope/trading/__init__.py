"""DOPE's trader core, shared by the backtester's event path and the live trader service.

A :class:`ThresholdStrategy` turns predictions into target directions, a :class:`PaperBroker`
fills them at the next bar's open with fees and slippage, a :class:`Portfolio` books the
executions; :class:`Trader` drives the three. What a prediction does to the position is the
trading rule, written once in :mod:`dope.trading.rule` (its arithmetic in
:mod:`dope.trading.accounting`) and compiled unchanged for the backtest kernel; the settings are
:mod:`dope.trading.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dope.lazy import lazy_exports

if TYPE_CHECKING:
    from dope.trading.accounting import HOLD, signal
    from dope.trading.broker import PaperBroker
    from dope.trading.orders import Execution, Order, TradeRecord
    from dope.trading.portfolio import Portfolio
    from dope.trading.strategy import ThresholdStrategy
    from dope.trading.trader import Trader

_HOME = {"HOLD": "accounting", "signal": "accounting", "PaperBroker": "broker", "Execution": "orders",
         "Order": "orders", "TradeRecord": "orders", "Portfolio": "portfolio", "ThresholdStrategy": "strategy",
         "Trader": "trader"}
__all__ = ["Execution", "HOLD", "Order", "PaperBroker", "Portfolio", "signal", "ThresholdStrategy", "Trader",
           "TradeRecord"]
__getattr__ = lazy_exports(__name__, _HOME)  # names load on first use: the services' config reads .config
