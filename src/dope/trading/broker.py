"""The paper broker: orders decided at a bar's close fill at the next bar's open.

The fill rule, the same in the event backtest, the vectorized backtest and the live
paper trader: a pending order fills at the open price of the next bar the broker sees,
slipped against the trader by ``slippage_bps`` and charged ``fee_rate`` on its value.
Moving from long to short (or back) is two fills at the same open: close, then open.
A new position takes ``fraction`` of the cash (fee included); none is opened without cash.
"""

from __future__ import annotations

from typing import Protocol

from dope.trading.accounting import close_position, open_position
from dope.trading.orders import Fill, Order
from dope.trading.portfolio import Portfolio

_NO_FILLS: tuple[Fill, ...] = ()


class Broker(Protocol):
    """What the :class:`~dope.trading.Trader` needs of a broker (the paper one, or a live one such as
    :class:`dope.trading.binance_broker.BinanceBroker`, which executes the submitted order itself)."""

    @property
    def pending(self) -> Order | None: ...

    def submit(self, order: Order) -> None: ...

    def cancel(self) -> None: ...

    def on_open(self, time_ms: int, open_price: float) -> tuple[Fill, ...]: ...


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
    """Simulated market orders against a :class:`Portfolio`, filled at the next open."""

    __slots__ = ("fee_rate", "fraction", "portfolio", "slippage")

    def __init__(self, portfolio: Portfolio, *, fee_rate: float = 0.001, slippage_bps: float = 0.0,
                 fraction: float = 1.0) -> None:
        super().__init__()
        self.portfolio = portfolio
        self.fee_rate = fee_rate
        self.slippage = slippage_bps / 10_000.0
        self.fraction = fraction

    def on_open(self, time_ms: int, open_price: float) -> tuple[Fill, ...]:
        """A new bar opened at ``open_price``: fill the waiting order there, book and return its fills."""
        order = self._pending
        if order is None:
            return _NO_FILLS
        self._pending = None
        fills: list[Fill] = []
        if self.portfolio.direction not in (0, order.target):
            fills.append(self._close(order.symbol, time_ms, open_price))
        if order.target not in (0, self.portfolio.direction) and self.portfolio.cash > 0:
            fills.append(self._open(order, time_ms, open_price))
        return tuple(fills)

    def _close(self, symbol: str, time_ms: int, open_price: float) -> Fill:
        pf = self.portfolio
        qty = abs(pf.qty)
        _, price, value, fee = close_position(pf.cash, pf.direction, qty, open_price, self.slippage,
                                              self.fee_rate)
        return self._book(Fill(symbol=symbol, time_ms=time_ms, side=-pf.direction, qty=qty, price=price,
                               value=value, fee=fee))

    def _open(self, order: Order, time_ms: int, open_price: float) -> Fill:
        _, qty, price, value, fee = open_position(self.portfolio.cash, order.target, open_price,
                                                  self.slippage, self.fee_rate, self.fraction)
        return self._book(Fill(symbol=order.symbol, time_ms=time_ms, side=order.target, qty=qty, price=price,
                               value=value, fee=fee))

    def _book(self, fill: Fill) -> Fill:
        self.portfolio.apply_fill(fill)
        return fill
