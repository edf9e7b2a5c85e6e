"""Binance's trading filters of one symbol (``exchangeInfo``, spec §3.6): lot step, price tick, notional."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any


@dataclass(frozen=True)
class SymbolFilters:
    """The ``LOT_SIZE``, ``PRICE_FILTER`` and ``(MIN_)NOTIONAL`` rules of one symbol (0 = rule off)."""

    symbol: str
    base_asset: str
    quote_asset: str
    step: Decimal = Decimal(0)
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal = Decimal(0)
    tick: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)
    max_notional: Decimal = Decimal(0)

    @classmethod
    def from_exchange_info(cls, entry: Mapping[str, Any]) -> SymbolFilters:
        """Read one ``exchangeInfo.symbols[]`` entry."""
        values: dict[str, Decimal] = {}
        for f in entry.get("filters", []):
            kind = f.get("filterType")
            if kind == "LOT_SIZE":
                values.update(step=Decimal(f["stepSize"]), min_qty=Decimal(f["minQty"]), max_qty=Decimal(f["maxQty"]))
            elif kind == "PRICE_FILTER":
                values["tick"] = Decimal(f["tickSize"])
            elif kind in ("NOTIONAL", "MIN_NOTIONAL"):
                values["min_notional"] = Decimal(f.get("minNotional", "0"))
                values["max_notional"] = Decimal(f.get("maxNotional", "0"))
        return cls(entry["symbol"], entry["baseAsset"], entry["quoteAsset"], **values)

    def quantity(self, qty: float) -> Decimal:
        """``qty`` rounded down to the lot step (and to ``max_qty``)."""
        amount = Decimal(repr(max(qty, 0.0)))
        if self.step > 0:
            amount = (amount / self.step).to_integral_value(ROUND_DOWN) * self.step
        if self.max_qty > 0:
            amount = min(amount, self.max_qty)
        return amount.normalize() if amount else Decimal(0)

    def problem(self, qty: Decimal, price: float) -> str | None:
        """Why an order of ``qty`` at about ``price`` would fail a filter (None: it passes)."""
        if qty <= 0 or qty < self.min_qty:
            return f"LOT_SIZE: quantity {qty} below the minimum {self.min_qty}"
        notional = qty * Decimal(repr(price))
        if self.min_notional > 0 and notional < self.min_notional:
            return f"NOTIONAL: {notional:.8f} below the minimum {self.min_notional}"
        if self.max_notional > 0 and notional > self.max_notional:
            return f"NOTIONAL: {notional:.8f} above the maximum {self.max_notional}"
        return None
