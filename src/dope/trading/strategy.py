"""The threshold strategy: buy above the upper threshold, sell below the lower one."""

from __future__ import annotations

from dope.trading.accounting import HOLD, signal


class ThresholdStrategy:
    """Turns a prediction into a target direction (long/flat, or long/short with ``allow_short``).

    ``prediction > upper`` -> long; ``prediction < lower`` -> flat (short if allowed);
    otherwise, and for NaN ("no prediction"), hold.

    >>> s = ThresholdStrategy(upper=0.001, lower=-0.001)
    >>> s.target(0.002, current=0), s.target(0.002, current=1), s.target(float("nan"), current=1)
    (1, None, None)
    """

    __slots__ = ("allow_short", "lower", "upper")

    def __init__(self, upper: float, lower: float, allow_short: bool = False) -> None:
        if lower > upper:
            raise ValueError(f"lower threshold {lower} is above upper threshold {upper}")
        self.upper = upper
        self.lower = lower
        self.allow_short = allow_short

    def target(self, prediction: float, current: int) -> int | None:
        """The direction to move to, or None when the position should stay as it is."""
        wanted = signal(prediction, self.upper, self.lower, self.allow_short)
        if wanted in (HOLD, current):
            return None
        return wanted
