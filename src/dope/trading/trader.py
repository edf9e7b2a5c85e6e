"""The trader core: strategy + broker + portfolio, driven by bars and predictions.

The event backtester and the live trader service both drive this one class, in the same
order for every bar ``t``::

    trader.on_bar(open_time[t], open[t], close[t])   # fills the order decided at t-1, marks at the close
    trader.on_prediction(prediction[t])               # decides at the close of t; fills at the open of t+1
"""

from __future__ import annotations

from dope.clock import Clock
from dope.trading.accounting import mark
from dope.trading.broker import Broker, PaperBroker  # noqa: F401 (PaperBroker: the doctest)
from dope.trading.orders import Execution, Order
from dope.trading.portfolio import Portfolio
from dope.trading.strategy import ThresholdStrategy


class Trader:
    """One symbol's trading: decisions from predictions, fills from bars, equity at each close.

    >>> from dope.clock import SimulatedClock
    >>> pf = Portfolio(100.0)
    >>> t = Trader("X", ThresholdStrategy(0.0, 0.0), PaperBroker(pf, fee_rate=0.0), pf, SimulatedClock())
    >>> t.on_bar(0, 10.0, 10.0); t.on_prediction(1.0).target
    ()
    1
    >>> t.on_bar(1, 10.0, 12.0); round(t.equity(), 6)
    (Execution(symbol='X', time_ms=1, side=1, qty=10.0, price=10.0, value=100.0, fee=0.0),)
    120.0
    """

    __slots__ = ("broker", "clock", "last_price", "portfolio", "strategy", "symbol")

    def __init__(self, symbol: str, strategy: ThresholdStrategy, broker: Broker, portfolio: Portfolio,
                 clock: Clock) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.broker = broker
        self.portfolio = portfolio
        self.clock = clock
        self.last_price = float("nan")

    def on_bar(self, open_time: int, open_price: float, close_price: float) -> tuple[Execution, ...]:
        """A bar closed: the waiting order fills at its open; the position is marked at its close."""
        fills = self.broker.on_open(open_time, open_price)
        self.last_price = close_price
        return fills

    def on_prediction(self, prediction: float) -> Order | None:
        """Decide on the prediction for the bar just closed; the order waits for the next open."""
        target = self.strategy.target(prediction, self.portfolio.direction)
        if target is None:
            return None
        order = Order(symbol=self.symbol, time_ms=self.clock.now_ms(), target=target, prediction=prediction)
        self.broker.submit(order)
        return order

    def equity(self) -> float:
        """Equity marked at the last close seen."""
        return mark(self.portfolio.cash, self.portfolio.qty, self.last_price)
