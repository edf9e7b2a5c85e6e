"""After a (re)start: the journal's unresolved orders settled against the exchange, then its open orders
and balances checked against the journal."""

from __future__ import annotations

import logging

from dope.trading.binance.broker import BinanceBroker
from dope.trading.journal import BaselineRecord, OrderRecord, SymbolHistory

log = logging.getLogger("dope.trader.binance")


async def reconcile(broker: BinanceBroker, history: SymbolHistory | None) -> list[str]:
    """After a (re)start: settle the journal's unresolved orders, then check open orders and balances.

    An ``intent`` without an outcome is looked up by its client order id (:meth:`~BinanceOrderClient.find_order`,
    so until it could no longer appear): found, its fill is booked (the commission estimated at
    ``fee_rate`` when the exchange does not list it); not found, it never reached the exchange and
    is closed as ``MISSING`` (never resent: the decision is old). :class:`OrderUnknown` when the
    exchange cannot tell. Returns the problems found (an unexpected open order, a balance that does not match
    the journal), which the trader treats as a reason to stop entering positions.
    """
    client, symbol = broker.client, broker.filters.symbol
    for cid, intent in sorted((history.open_intents if history else {}).items()):
        report = await client.find_order(symbol, cid, intent.time_ms)
        if report is None:
            client._count("orders_missing_after_restart")
            broker.journal(OrderRecord(symbol=symbol, client_order_id=cid, status="MISSING",
                                       reason="not on the exchange after a restart"))
        else:
            client._count("orders_recovered_after_restart")
            broker.book(report, intent.side)
        log.warning("%s: order %s from before the restart: %s", symbol, cid,
                    "recovered" if report is not None else "never reached the exchange")
    problems = [f"unexpected open order {o.clientOrderId}" for o in await client.open_orders(symbol)
                if o.clientOrderId.startswith("dope-")]
    return problems + await _check_balance(broker, history)


async def _check_balance(broker: BinanceBroker, history: SymbolHistory | None) -> list[str]:
    asset = broker.filters.base_asset
    actual = (await broker.client.account()).get(asset, 0.0)
    held = broker.portfolio.qty + broker.dust + (history.dust if history else 0.0)
    baseline = history.baseline if history else None
    if baseline is None:
        broker.journal(BaselineRecord(symbol=broker.filters.symbol, asset=asset, amount=actual - held))
        return []
    expected = baseline.amount + held
    tolerance = max(float(broker.filters.step), 1e-8) * 2
    if abs(actual - expected) > tolerance:
        return [f"{asset} balance {actual:.8f} differs from the journal's {expected:.8f}"]
    return []
