"""The arithmetic of a fill, written once and run twice.

These plain scalar functions are called as they are by the paper broker and the
portfolio (the event path, and the live trader), and compiled unchanged by numba for
the vectorized backtester (``register_jitable`` leaves the Python function as it is),
so both paths do the same floating-point operations in the same order and agree bit
for bit.

Directions are ``1`` (long), ``0`` (flat) and ``-1`` (short); a side is ``1`` for a
buy and ``-1`` for a sell.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

#: A signal meaning "no change": keep the current position.
HOLD = 2


@register_jitable
def signal(prediction: float, upper: float, lower: float, allow_short: bool) -> int:
    """The target direction for a prediction, or ``HOLD`` (NaN predictions hold).

    >>> signal(0.02, 0.01, -0.01, False), signal(-0.02, 0.01, -0.01, False), signal(0.0, 0.01, -0.01, True)
    (1, 0, 2)
    """
    if prediction > upper:
        return 1
    if prediction < lower:
        return -1 if allow_short else 0
    return HOLD


@register_jitable
def change_levels(direction: int, upper: float, lower: float, allow_short: bool) -> tuple[float, float]:
    """(above, below): a prediction above ``above`` or below ``below`` asks :func:`signal` for a direction
    other than ``direction``, and no other prediction does (NaN never does).

    A loop over bars that tests only these two levels branches on the one threshold that
    matters for the position held.

    >>> change_levels(1, 0.01, -0.01, False), change_levels(0, 0.01, -0.01, False)
    ((inf, -0.01), (0.01, -inf))
    """
    if direction > 0:
        return math.inf, lower
    if direction < 0:
        return upper, -math.inf
    return upper, lower if allow_short else -math.inf


@register_jitable
def fill_price(open_price: float, side: int, slippage: float) -> float:
    """The price a market order gets at ``open_price``: slippage always against the trader."""
    if side > 0:
        return open_price * (1.0 + slippage)
    return open_price * (1.0 - slippage)


@register_jitable
def settle(cash: float, side: int, value: float, fee: float) -> float:
    """Cash after trading ``value`` of quote currency on ``side`` and paying ``fee``."""
    if side > 0:
        return cash - value - fee
    return cash + value - fee


@register_jitable
def close_position(cash: float, direction: int, qty: float, open_price: float, slippage: float,
                   fee_rate: float) -> tuple[float, float, float, float]:
    """Close ``qty`` units held in ``direction`` at ``open_price``: (cash, price, value, fee)."""
    side = -direction
    price = fill_price(open_price, side, slippage)
    value = qty * price
    fee = value * fee_rate
    return settle(cash, side, value, fee), price, value, fee


@register_jitable
def open_position(cash: float, direction: int, open_price: float, slippage: float, fee_rate: float,
                  fraction: float) -> tuple[float, float, float, float, float]:
    """Put ``fraction`` of ``cash`` (fee included) into ``direction``: (cash, qty, price, value, fee)."""
    price = fill_price(open_price, direction, slippage)
    value = fraction * cash / (1.0 + fee_rate)
    fee = value * fee_rate
    qty = value / price
    return settle(cash, direction, value, fee), qty, price, value, fee


@register_jitable
def trade_pnl(direction: int, qty: float, entry_price: float, exit_price: float, entry_fee: float,
              exit_fee: float) -> float:
    """Profit of a round trip in quote currency, both fees paid."""
    return direction * qty * (exit_price - entry_price) - entry_fee - exit_fee


@register_jitable
def trade_return(pnl: float, qty: float, entry_price: float) -> float:
    """Profit of a round trip (fees included) as a fraction of the entry value."""
    return pnl / (qty * entry_price)


@register_jitable
def mark(cash: float, qty: float, price: float) -> float:
    """Equity: cash plus the signed position valued at ``price``."""
    return cash + qty * price
