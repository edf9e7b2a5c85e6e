"""The paper broker: orders decided at a bar's close fill at the next bar's open.

The fill rule is the trading rule's (:func:`dope.trading.rule.execute`), the same in the event backtest,
the backtest kernel and the live paper trader: a pending order fills at the open price of the next bar the broker sees,
slipped against the trader by ``slippage_bps`` and charged ``fee_rate`` on its value.
Moving from long to short (or back) is two fills at the same open: close, then open.
A new position takes ``fraction`` of the cash (fee included); none is opened without cash.
"""

from __future__ import annotations

from typing import Protocol

from dope.trading.orders import Execution, Order
from dope.trading.portfolio import Portfolio
from dope.trading.rule import Costs, Leg, execute

_NONE: tuple[Execution, ...] = ()


class Broker(Protocol):
    """What the :class:`~dope.trading.Trader` needs of a broker (the paper one, or a live one such as
    :class:`dope.trading.binance.BinanceBroker`, which executes the submitted order itself)."""

    @property
    def pending(self) -> Order | None: ...

    def submit(self, order: Order) -> None: ...

    def cancel(self) -> None: ...

    def on_open(self, time_ms: int, open_price: float) -> tuple[Execution, ...]: ...


class OrderSlot:
    """The one order a broker holds between the decision and its execution (a new one replaces it)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: Order | None = None

    @property
    def pending(self) -> Order | None:
        """The order waiting to be executed, if any."""
        return self._pending

    def submit(self, order: Order) -> None:
        """Hold ``order`` for execution (it replaces an order still waiting)."""
        self._pending = order

    def cancel(self) -> None:
        """Drop the waiting order."""
        self._pending = None


class PaperBroker(OrderSlot):
    """Simulated market orders against a :class:`Portfolio`, filled at the next open by the trading rule
    (:func:`dope.trading.rule.execute`) with ``costs``."""

    __slots__ = ("costs", "portfolio")

    def __init__(self, portfolio: Portfolio, *, fee_rate: float = 0.001, slippage_bps: float = 0.0,
                 fraction: float = 1.0) -> None:
        super().__init__()
        self.portfolio = portfolio
        self.costs = Costs(fee_rate, slippage_bps / 10_000.0, fraction)

    @classmethod
    def of(cls, portfolio: Portfolio, costs: Costs) -> PaperBroker:
        """A paper broker filling with ``costs``."""
        broker = cls(portfolio)
        broker.costs = costs
        return broker

    def on_open(self, time_ms: int, open_price: float) -> tuple[Execution, ...]:
        """A new bar opened at ``open_price``: execute the waiting order there, book and return its legs."""
        order = self._pending
        if order is None:
            return _NONE
        self._pending = None
        _, closed, opened = execute(self.portfolio.position(), order.target, open_price, self.costs)
        return tuple(self._book(order.symbol, time_ms, leg) for leg in (closed, opened) if leg.side != 0)

    def _book(self, symbol: str, time_ms: int, leg: Leg) -> Execution:
        done = Execution(symbol=symbol, time_ms=time_ms, side=leg.side, qty=leg.qty, price=leg.price,
                         value=leg.value, fee=leg.fee)
        self.portfolio.apply_fill(done)
        return done
