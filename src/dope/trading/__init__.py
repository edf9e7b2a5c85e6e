"""DOPE's trader core, shared by the backtester's event path and the live trader service.

A :class:`ThresholdStrategy` turns predictions into target directions, a :class:`PaperBroker`
fills them at the next bar's open with fees and slippage, a :class:`Portfolio` books the
fills; :class:`Trader` drives the three. The fill arithmetic lives in
:mod:`dope.trading.accounting` and is compiled unchanged for the vectorized backtester.
"""

from dope.trading.accounting import HOLD, signal
from dope.trading.broker import PaperBroker
from dope.trading.orders import Fill, Order, TradeRecord
from dope.trading.portfolio import Portfolio
from dope.trading.strategy import ThresholdStrategy
from dope.trading.trader import Trader

__all__ = ["HOLD", "Fill", "Order", "PaperBroker", "Portfolio", "ThresholdStrategy", "TradeRecord", "Trader",
           "signal"]
