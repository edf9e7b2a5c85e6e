"""The trader's risk limits: position caps, the daily-loss kill switch and staleness checks.

Pure logic on numbers and times the caller passes in, so the live trader, its tests and a
replay all see the same answers. The kill switch counts days in UTC on the *bar's* time
(event time), so a replay trips and resets it exactly as the live run did.

>>> from dope.trading.config import RiskConfig
>>> risk = RiskLimits(RiskConfig(max_daily_loss=100.0))
>>> risk.on_equity(0, 10_000.0), risk.on_equity(10_000, 9_850.0), risk.state.killed
(None, 'daily loss 150.00 > limit 100.00', True)
>>> risk.on_equity(86_400_000, 9_850.0), risk.state.killed     # next UTC day: trading again
(None, False)
"""

from __future__ import annotations

import msgspec

from dope.trading.accounting import fill_price
from dope.trading.config import RiskConfig
from dope.types import DAY_MS

HALT_PREFIX = "exchange halt: "


class RiskState(msgspec.Struct, kw_only=True):
    """What the risk limits remember (journaled with every bar so a restart resumes it)."""

    day: int = -1
    day_start_equity: float | None = None
    last_equity: float | None = None
    killed: bool = False
    reason: str = ""
    halted_until_ms: int = 0
    """The exchange refuses this trader until then (an IP ban; broker clock): the kill switch stays on."""


class RiskLimits:
    """One symbol's limits: call :meth:`on_equity` at every bar close, ask before every entry."""

    __slots__ = ("config", "state")

    def __init__(self, config: RiskConfig, state: RiskState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else RiskState()

    def on_equity(self, open_time: int, equity: float) -> str | None:
        """Book the equity marked at a bar close; the reason when this bar trips the kill switch."""
        st = self.state
        day = open_time // DAY_MS
        if day != st.day:
            self._new_day(day)
        st.last_equity = equity
        if st.killed:
            return None
        reason = self._daily_loss(equity)
        if reason is not None:
            st.killed, st.reason = True, reason
        return reason

    def _new_day(self, day: int) -> None:
        st = self.state
        start = st.last_equity
        st.day, st.day_start_equity = day, start
        if not st.halted_until_ms:
            st.killed, st.reason = False, ""

    def _daily_loss(self, equity: float) -> str | None:
        start = self.state.day_start_equity
        if start is None:  # the first bar ever: this close is the day's reference
            self.state.day_start_equity = start = equity
        loss = start - equity
        cfg = self.config
        if cfg.max_daily_loss > 0 and loss > cfg.max_daily_loss:
            return f"daily loss {loss:.2f} > limit {cfg.max_daily_loss:.2f}"
        if cfg.max_daily_loss_fraction > 0 and loss > cfg.max_daily_loss_fraction * start:
            return f"daily loss {loss / start:.2%} > limit {cfg.max_daily_loss_fraction:.2%}"
        return None

    def halt(self, until_ms: int, why: str) -> None:
        """The exchange refuses orders until ``until_ms``: the kill switch is on until :meth:`end_halt`."""
        st = self.state
        if not st.killed or st.halted_until_ms:
            st.killed, st.reason = True, HALT_PREFIX + why
        st.halted_until_ms = until_ms

    def end_halt(self, now_ms: int) -> bool:
        """True when a halt ended at ``now_ms`` (the kill switch goes off unless something else tripped it)."""
        st = self.state
        if not st.halted_until_ms or now_ms < st.halted_until_ms:
            return False
        if st.reason.startswith(HALT_PREFIX):
            st.killed, st.reason = False, ""
        st.halted_until_ms = 0
        return True

    def reset(self) -> None:
        """Manual reset of the kill switch: trading resumes; today's loss counts from now."""
        st = self.state
        st.killed, st.reason = False, ""
        st.day_start_equity = st.last_equity

    def fraction(self, fraction: float, cash: float, price: float, target: int, fee_rate: float,
                 slippage: float) -> float:
        """``fraction`` of ``cash`` to put in a new position at ``price``, capped by the position limits.

        The cap is exact for the paper broker's sizing (``value = f * cash / (1 + fee)`` at the
        fill price) and for the Binance broker (quantity rounded down to the lot step).
        """
        if cash <= 0 or target == 0:
            return fraction
        cfg = self.config
        if cfg.max_position_notional > 0:
            fraction = min(fraction, cfg.max_position_notional * (1.0 + fee_rate) / cash)
        if cfg.max_position_units > 0:
            price_fill = fill_price(price, target, slippage)
            fraction = min(fraction, cfg.max_position_units * price_fill * (1.0 + fee_rate) / cash)
        return fraction

    def stale_prediction(self, received_ms: int, bar_received_ms: int) -> str | None:
        """Why a prediction that arrived at ``received_ms`` for a bar seen at ``bar_received_ms`` is stale."""
        delay = received_ms - bar_received_ms
        limit = self.config.max_prediction_delay_ms
        if limit > 0 and delay > limit:
            return f"stale prediction: arrived {delay} ms after its bar (limit {limit} ms)"
        return None

    def stale_price(self, bar_close_time: int, now_ms: int) -> str | None:
        """Why the price of a bar that closed at ``bar_close_time`` is too old to trade on at ``now_ms``."""
        age = now_ms - bar_close_time
        limit = self.config.max_price_age_ms
        if limit > 0 and age > limit:
            return f"stale price: the last bar closed {age} ms ago (limit {limit} ms)"
        return None
