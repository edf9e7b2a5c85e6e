"""The trading rule, written once: what a bar's prediction does to the position.

At the close of a bar, :func:`decide` turns the prediction into an order (a target
direction) or ``HOLD``. At the next bar's open the order executes (:func:`execute`): the
position held is closed when the target differs from it (:func:`closes`), then the target
is opened when it is long or short, nothing is held and there is cash (:func:`opens`).
So an order holds, opens, closes, reverses (close then open, at the same open) or is
refused (no cash after a short that lost more than the account).

Every function here is plain Python that numba compiles unchanged (``register_jitable``),
so the compiled backtest kernel and Python callers (the paper broker, the live Binance
broker, the rendezvous scorecard) run the same decisions with the same floating-point
operations. The arithmetic of each fill is :mod:`dope.trading.accounting`.

>>> flat = Position(cash=1000.0, direction=0, qty=0.0, entry_price=math.nan, entry_fee=math.nan)
>>> order = decide(0.02, flat.direction, Thresholds(0.01, -0.01, False))
>>> held, closed, opened = execute(flat, order, 100.0, Costs(fee_rate=0.0, slippage=0.0, fraction=1.0))
>>> order, held.direction, held.qty, closed.side, opened.side
(1, 1, 10.0, 0, 1)
"""

from __future__ import annotations

import math
from typing import NamedTuple

from numba.extending import register_jitable

from dope.trading.accounting import HOLD, change_levels, close_position, open_position, signal


class Thresholds(NamedTuple):
    """The threshold strategy: long above ``upper``; below ``lower`` flat, or short with ``allow_short``."""

    upper: float
    lower: float
    allow_short: bool


class Costs(NamedTuple):
    """What a fill costs and how big a new position is (see :func:`dope.trading.accounting.open_position`)."""

    fee_rate: float
    slippage: float
    fraction: float


class Position(NamedTuple):
    """The account of one symbol: cash, and the position held (``qty`` units, unsigned, in ``direction``:
    1 long, 0 flat, -1 short) with the price and fee of its entry (NaN when flat)."""

    cash: float
    direction: int
    qty: float
    entry_price: float
    entry_fee: float


class Leg(NamedTuple):
    """One market fill of an order: ``side`` 1 buy, -1 sell, 0 when the order had no such leg."""

    side: int
    qty: float
    price: float
    value: float
    fee: float


@register_jitable
def no_leg() -> Leg:
    """The leg of an order that did not fill one."""
    return Leg(0, 0.0, math.nan, 0.0, 0.0)


@register_jitable
def flat(cash: float) -> Position:
    """An account holding only ``cash``."""
    return Position(cash, 0, 0.0, math.nan, math.nan)


@register_jitable
def decide(prediction: float, direction: int, thresholds: Thresholds) -> int:
    """The order a prediction asks for at a bar's close, holding ``direction``: a target direction, or
    ``HOLD`` when the position should stay as it is (NaN predictions, the thresholds not crossed, or
    the target already held).

    >>> decide(0.02, 0, Thresholds(0.01, -0.01, False)), decide(0.02, 1, Thresholds(0.01, -0.01, False))
    (1, 2)
    """
    upper, lower, allow_short = thresholds
    above, below = change_levels(direction, upper, lower, allow_short)
    if prediction > above or prediction < below:  # rarely true: a branch the CPU predicts
        return signal(prediction, upper, lower, allow_short)
    return HOLD


@register_jitable
def closes(direction: int, target: int) -> bool:
    """Whether an order for ``target`` first closes the position held in ``direction``."""
    return target != HOLD and direction != 0 and target != direction


@register_jitable
def opens(direction: int, target: int, cash: float) -> bool:
    """Whether an order for ``target`` opens a position, given ``direction`` and ``cash`` as they are once
    the position was closed (:func:`closes`): only from flat, and never without cash."""
    return target != HOLD and target != 0 and direction == 0 and cash > 0.0


@register_jitable
def execute(position: Position, target: int, open_price: float, costs: Costs) -> tuple[Position, Leg, Leg]:
    """The order for ``target`` filled at ``open_price``: the position after it, the closing leg and the
    opening leg (:func:`no_leg` where the order had none).

    >>> p = Position(cash=0.0, direction=1, qty=10.0, entry_price=100.0, entry_fee=0.0)
    >>> after, closed, opened = execute(p, -1, 90.0, Costs(fee_rate=0.0, slippage=0.0, fraction=1.0))
    >>> (closed.side, closed.value), (opened.side, opened.qty), after.direction
    ((-1, 900.0), (-1, 10.0), -1)
    """
    closed = opened = no_leg()
    if closes(position.direction, target):
        side = -position.direction
        cash, price, value, fee = close_position(position.cash, position.direction, position.qty, open_price,
                                                 costs.slippage, costs.fee_rate)
        closed = Leg(side, position.qty, price, value, fee)
        position = flat(cash)
    if opens(position.direction, target, position.cash):
        cash, qty, price, value, fee = open_position(position.cash, target, open_price, costs.slippage,
                                                     costs.fee_rate, costs.fraction)
        opened = Leg(target, qty, price, value, fee)
        position = Position(cash, target, qty, price, fee)
    return position, closed, opened
