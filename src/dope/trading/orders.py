"""What the trader core sends and receives: target orders, executions (its fills) and finished trades.

(The bus message announcing a fill is :class:`dope.messages.Fill`.)
"""

from __future__ import annotations

import msgspec


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """Move ``symbol`` to ``target`` (1 long, 0 flat, -1 short), decided at ``time_ms`` on ``prediction``.

    The size is fixed when the order fills (a fraction of the equity at the fill price).
    """

    symbol: str
    time_ms: int
    target: int
    prediction: float


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """An executed market order, as the portfolio books it: ``qty`` units on ``side`` (1 buy, -1 sell) for
    ``value`` quote + ``fee`` (one leg of an order: :class:`dope.trading.rule.Leg` with its symbol and time)."""

    symbol: str
    time_ms: int
    side: int
    qty: float
    price: float
    value: float
    fee: float


class TradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A round trip (or the still open position at the end, ``is_open``, valued at the last mark)."""

    direction: int
    qty: float
    entry_time: int
    entry_price: float
    entry_fee: float
    exit_time: int
    exit_price: float
    exit_fee: float
    pnl: float
    ret: float
    is_open: bool = False
