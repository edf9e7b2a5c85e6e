"""The interface every trade source implements."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from dope.errors import UserError
from dope.messages import Trade


class UnknownSymbolError(UserError, ValueError):
    """A symbol the source does not know (not listed by the exchange, not in the files)."""


class TradeSource(Protocol):
    """Yields batches of trades of the configured symbols, oldest first per symbol.

    ``resume`` maps a symbol to the first trade time (epoch ms) still needed:
    trades before it are already in the store and must not be yielded again.
    ``counters`` counts what the source rejected or repaired (malformed
    messages, duplicates, reconnects, ...) so the service can report it.
    """

    counters: dict[str, int]
    is_live: bool
    """True while the source delivers trades in real time with nothing missing, so bars may be
    closed on the wall clock; False for replays, the synthetic market and a live feed that is
    reconnecting or backfilling (bars then close on event time only, and nothing arrives late)."""

    def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]: ...


def trade_problem(trade: Trade) -> str | None:
    """Why a trade cannot be used (``bad_price``, ``bad_qty``), or None. NaN fails every comparison."""
    if not 0 < trade.price < math.inf:
        return "bad_price"
    if not 0 < trade.qty < math.inf:
        return "bad_qty"
    return None
