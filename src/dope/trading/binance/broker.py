"""The Binance broker: the trader core's orders sent as market orders, their fills booked and journaled.

Which legs an order sends is the trading rule's (:func:`dope.trading.rule.closes`,
:func:`~dope.trading.rule.opens`; spot never shorts); what they execute is the exchange's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from decimal import Decimal

from dope.trading.binance.filters import SymbolFilters
from dope.trading.binance.rest import (
    BinanceOrderClient,
    OrderDropped,
    OrderRejected,
    OrderReport,
    OrderUnknown,
)
from dope.trading.broker import OrderSlot
from dope.trading.journal import FillRecord, IntentRecord, OrderRecord, Record
from dope.trading.orders import Execution
from dope.trading.portfolio import Portfolio
from dope.trading.rule import closes, opens

log = logging.getLogger("dope.trader.binance")

OUTCOME_UNKNOWN = "order outcome unknown: "
_NONE: tuple[Execution, ...] = ()


def client_order_id(symbol: str, open_time: int, leg: str) -> str:
    """The order id of one leg (``open``, ``close``, ``kill``) of the decision at bar ``open_time``.

    Deterministic, so resending a decision after a restart is refused as a duplicate; at most
    36 characters of ``[A-Za-z0-9_-]`` as Binance requires.

    >>> client_order_id("BTCUSDT", 1723161240000, "open")
    'dope-BTCUSDT-1723161240000-open'
    """
    text = f"dope-{symbol}-{open_time}-{leg}"
    if len(text) <= 36:
        return text
    return "dope-" + hashlib.sha256(text.encode()).hexdigest()[:31]


JournalHook = Callable[[Record], None]
"""Where the broker writes its ``intent`` (before sending), ``fill`` and ``order`` records."""


class BinanceBroker(OrderSlot):
    """Market orders on Binance for the core :class:`~dope.trading.Trader` of one symbol (long/flat).

    :meth:`submit` only records the target (the core decides synchronously); the live trader
    then awaits :meth:`execute`, which sends the legs (close, then open) at once and books their
    fills in the portfolio. :meth:`on_open` has nothing to fill: orders never wait for a bar.
    """

    def __init__(self, client: BinanceOrderClient, filters: SymbolFilters, portfolio: Portfolio, *,
                 fee_rate: float = 0.001, fraction: float = 1.0, journal: JournalHook | None = None,
                 known_orders: set[str] | None = None, max_order_age_ms: int = 0) -> None:
        super().__init__()
        self.client = client
        self.max_order_age_ms = max_order_age_ms
        """An order not sent within this of the decision (client clock) is dropped; 0 = no limit."""
        self.problem: str | None = None
        """Why the last :meth:`execute` sent less than it should (an order dropped, or its outcome unknown)."""
        self.filters = filters
        self.portfolio = portfolio
        self.fee_rate = fee_rate
        self.fraction = fraction
        self.journal: JournalHook = journal or (lambda record: None)
        self.known_orders = known_orders if known_orders is not None else set()
        self.dust = 0.0
        self.last_ids: list[str] = []
        """Client order ids of the fills the last :meth:`execute` returned, in order."""

    def __repr__(self) -> str:
        return f"BinanceBroker({self.filters.symbol}, client={self.client!r})"

    def on_open(self, time_ms: int, open_price: float) -> tuple[Execution, ...]:
        return _NONE

    async def execute(self, open_time: int, price: float, leg: str = "") -> tuple[Execution, ...]:
        """Send the waiting order's legs now (``price``: the latest price, for sizing); their fills."""
        order, self._pending = self._pending, None
        self.last_ids, self.problem = [], None
        if order is None:
            return _NONE
        age = self.max_order_age_ms
        deadline = self.client.clock.now_ms() + age if age > 0 else None
        fills: list[Execution] = []
        pf = self.portfolio
        if closes(pf.direction, order.target):
            fills += await self._leg(order.symbol, "SELL", Decimal(repr(abs(pf.qty))), open_time, leg or "close",
                                     price, deadline)
        if order.target > 0 and opens(pf.direction, order.target, pf.cash) and self.problem is None:
            qty = self.filters.quantity(self.fraction * pf.cash / (1.0 + self.fee_rate) / price)
            fills += await self._leg(order.symbol, "BUY", qty, open_time, leg or "open", price, deadline)
        return tuple(fills)

    async def _leg(self, symbol: str, side: str, qty: Decimal, open_time: int, leg: str,
                   price: float, deadline_ms: int | None) -> list[Execution]:
        cid = client_order_id(symbol, open_time, leg)
        if cid in self.known_orders:
            log.warning("%s: order %s is already in the journal; not sending it again", symbol, cid)
            return []
        if side == "SELL":
            qty = self.filters.quantity(float(qty))
        problem = self.filters.problem(qty, price)
        if problem is not None:
            return self._skip(symbol, cid, problem)
        self.known_orders.add(cid)
        self.journal(IntentRecord(symbol=symbol, client_order_id=cid, side=side, qty=format(qty, "f"),
                                  open_time=open_time, time_ms=self.client.clock.now_ms()))
        try:
            report = await self.client.market_order(symbol, side, qty, cid, deadline_ms=deadline_ms)
        except (OrderRejected, OrderDropped) as exc:
            status = "REJECTED" if isinstance(exc, OrderRejected) else "DROPPED"
            self.journal(OrderRecord(symbol=symbol, client_order_id=cid, status=status, reason=str(exc)))
            log.error("%s: order %s %s: %s", symbol, cid, status.lower(), exc)
            if isinstance(exc, OrderDropped):
                self.problem = f"order dropped: {exc}"
            return []
        except OrderUnknown as exc:
            log.error("%s: %s; left to the reconciliation, never resent", symbol, exc)
            self.problem = f"{OUTCOME_UNKNOWN}{exc}"
            return []
        return self.book(report, side)

    def _skip(self, symbol: str, cid: str, problem: str) -> list[Execution]:
        self.client._count("orders_skipped_filters")
        log.warning("%s: not sending %s: %s", symbol, cid, problem)
        return []

    def book(self, report: OrderReport, side: str | None = None) -> list[Execution]:
        """Turn an exchange order into a core fill, book it in the portfolio and journal it."""
        side = side or report.side
        executed = float(report.executedQty)
        if executed <= 0:
            self.journal(OrderRecord(symbol=report.symbol, client_order_id=report.clientOrderId,
                                     status=report.status, reason="nothing executed"))
            return []
        unfilled = _unfilled(report)
        fill, dust = self._to_fill(report, side, executed, partial=unfilled > 0)
        self.portfolio.apply_fill(fill)
        self.dust += dust
        self.journal(FillRecord(symbol=report.symbol, client_order_id=report.clientOrderId, fill=fill, dust=dust,
                                fee_asset=self.filters.quote_asset, unfilled=format(unfilled, "f") if unfilled else ""))
        if unfilled:
            self.client._count("orders_partial")
            log.warning("%s: order %s %s with %s of %s executed: booked as a partial fill, %s not executed",
                        report.symbol, report.clientOrderId, report.status, report.executedQty, report.origQty,
                        format(unfilled, "f"))
        self.last_ids.append(report.clientOrderId)
        return [fill]

    def _to_fill(self, report: OrderReport, side: str, executed: float, *, partial: bool) -> tuple[Execution, float]:
        """The core fill of ``report``; a close sells the whole position (the rest is dust) unless ``partial``."""
        quote = float(report.cummulativeQuoteQty)
        price = quote / executed
        base_fee, quote_fee = self._commissions(report, side, executed)
        time_ms = report.transactTime or report.time
        if side == "BUY":
            net = executed - base_fee
            fee = base_fee * price + quote_fee
            value = quote - base_fee * price
            return Execution(symbol=report.symbol, time_ms=time_ms, side=1, qty=net, price=price, value=value, fee=fee), 0.0
        held = abs(self.portfolio.qty)
        sold = min(executed, held) if partial else held
        return Execution(symbol=report.symbol, time_ms=time_ms, side=-1, qty=sold, price=price, value=quote,
                    fee=quote_fee + base_fee * price), 0.0 if partial else max(held - executed, 0.0)

    def _commissions(self, report: OrderReport, side: str, executed: float) -> tuple[float, float]:
        """(base, quote) commissions; estimated at ``fee_rate`` when the report lists no fills (a query)."""
        if report.fills is None:
            quote = float(report.cummulativeQuoteQty)
            return (executed * self.fee_rate, 0.0) if side == "BUY" else (0.0, quote * self.fee_rate)
        base = sum(float(f.commission) for f in report.fills if f.commissionAsset == self.filters.base_asset)
        quote = sum(float(f.commission) for f in report.fills if f.commissionAsset == self.filters.quote_asset)
        return base, quote


def _unfilled(report: OrderReport) -> Decimal:
    """What an order that ended without filling whole (``EXPIRED``, ``CANCELED``...) left unexecuted."""
    ordered, executed = Decimal(report.origQty), Decimal(report.executedQty)
    if report.status in ("NEW", "PARTIALLY_FILLED", "FILLED") or ordered <= executed:
        return Decimal(0)
    return (ordered - executed).normalize()
