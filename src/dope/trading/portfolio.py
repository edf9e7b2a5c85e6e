"""The account of one symbol: cash, position, fees and finished trades, updated from fills."""

from __future__ import annotations

import math

from dope.trading.accounting import mark, settle, trade_pnl, trade_return
from dope.trading.orders import Execution, TradeRecord
from dope.trading.rule import Position


class Portfolio:
    """Cash and a signed position in one symbol; every fill opens a position or closes it (whole, or part
    of it: a live order that executed partly).

    >>> p = Portfolio(1000.0)
    >>> p.apply_fill(Execution(symbol="X", time_ms=0, side=1, qty=2.0, price=100.0, value=200.0, fee=0.2))
    >>> p.cash, p.qty, p.equity(110.0)
    (799.8, 2.0, 1019.8)
    """

    __slots__ = ("_entry", "cash", "direction", "fees_paid", "qty", "trades")

    def __init__(self, cash: float) -> None:
        self.cash = cash
        self.qty = 0.0
        self.direction = 0
        self.fees_paid = 0.0
        self.trades: list[TradeRecord] = []
        self._entry: Execution | None = None

    def equity(self, price: float) -> float:
        """Cash plus the position marked at ``price``."""
        return mark(self.cash, self.qty, price)

    def position(self) -> Position:
        """The account as the trading rule takes it (the position's size unsigned)."""
        entry = self._entry
        if entry is None:
            return Position(self.cash, self.direction, abs(self.qty), math.nan, math.nan)
        return Position(self.cash, self.direction, abs(self.qty), entry.price, entry.fee)

    def apply_fill(self, fill: Execution) -> None:
        """Book a fill: cash and fees; then close the position (or part of it) or open a new one.

        ValueError, with nothing booked, for a fill that adds to the position or closes more than it.
        """
        closing = self.direction != 0 and fill.side == -self.direction
        if self.direction != 0 and not closing:
            raise ValueError(f"{fill.symbol}: a fill adding to an open position is not supported")
        if closing and self._entry is not None and fill.qty > self._entry.qty:
            raise ValueError(f"{fill.symbol}: a close of {fill.qty} is larger than the position {self._entry.qty}")
        self.cash = settle(self.cash, fill.side, fill.value, fill.fee)
        self.fees_paid += fill.fee
        if closing:
            self._close(fill)
        else:
            self._open(fill)

    def _open(self, fill: Execution) -> None:
        self.direction = fill.side
        self.qty = fill.side * fill.qty
        self._entry = fill

    def _close(self, fill: Execution) -> None:
        """Close the position, or part of it (a live order that executed partly): a trade per closing fill.

        >>> p = Portfolio(1000.0)
        >>> p.apply_fill(Execution(symbol="X", time_ms=0, side=1, qty=2.0, price=100.0, value=200.0, fee=0.2))
        >>> p.apply_fill(Execution(symbol="X", time_ms=1, side=-1, qty=0.5, price=110.0, value=55.0, fee=0.0))
        >>> p.qty, p.direction, p.trades[-1].qty, p.trades[-1].entry_fee
        (1.5, 1, 0.5, 0.05)
        """
        entry = self._entry
        assert entry is not None
        if fill.qty < entry.qty:
            closed, entry = _split(entry, fill.qty)
            self.trades.append(_record(self.direction, closed, fill.time_ms, fill.price, fill.fee, False))
            self.qty, self._entry = self.direction * entry.qty, entry
            return
        self.trades.append(_record(self.direction, entry, fill.time_ms, fill.price, fill.fee, False))
        self.direction = 0
        self.qty = 0.0
        self._entry = None

    def open_trade(self, mark_price: float) -> TradeRecord | None:
        """The open position as a trade valued at ``mark_price`` (no exit fee), or None when flat."""
        if self._entry is None:
            return None
        return _record(self.direction, self._entry, -1, mark_price, 0.0, True)


def _split(entry: Execution, qty: float) -> tuple[Execution, Execution]:
    """``entry`` as its first ``qty`` units and the rest, value and fee shared pro rata."""
    share = qty / entry.qty
    first = entry.__replace__(qty=qty, value=entry.value * share, fee=entry.fee * share)
    rest = entry.__replace__(qty=entry.qty - qty, value=entry.value - first.value, fee=entry.fee - first.fee)
    return first, rest


def _record(direction: int, entry: Execution, exit_time: int, exit_price: float, exit_fee: float,
            is_open: bool) -> TradeRecord:
    pnl = trade_pnl(direction, entry.qty, entry.price, exit_price, entry.fee, exit_fee)
    return TradeRecord(direction=direction, qty=entry.qty, entry_time=entry.time_ms, entry_price=entry.price,
                       entry_fee=entry.fee, exit_time=exit_time, exit_price=exit_price, exit_fee=exit_fee,
                       pnl=pnl, ret=trade_return(pnl, entry.qty, entry.price), is_open=is_open)
