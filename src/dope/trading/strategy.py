"""The threshold strategy: buy above the upper threshold, sell below the lower one."""

from __future__ import annotations

from dope.trading.accounting import HOLD
from dope.trading.rule import Thresholds, decide


class ThresholdStrategy:
    """Turns a prediction into a target direction (long/flat, or long/short with ``allow_short``).

    ``prediction > upper`` -> long; ``prediction < lower`` -> flat (short if allowed);
    otherwise, and for NaN ("no prediction"), hold.

    >>> s = ThresholdStrategy(upper=0.001, lower=-0.001)
    >>> s.target(0.002, current=0), s.target(0.002, current=1), s.target(float("nan"), current=1)
    (1, None, None)
    """

    __slots__ = ("thresholds",)

    def __init__(self, upper: float, lower: float, allow_short: bool = False) -> None:
        if lower > upper:
            raise ValueError(f"lower threshold {lower} is above upper threshold {upper}")
        self.thresholds = Thresholds(upper, lower, allow_short)

    @classmethod
    def of(cls, thresholds: Thresholds) -> ThresholdStrategy:
        """The strategy with ``thresholds``."""
        return cls(thresholds.upper, thresholds.lower, thresholds.allow_short)

    def target(self, prediction: float, current: int) -> int | None:
        """The direction to move to (the trading rule's :func:`~dope.trading.rule.decide`), or None when the
        position should stay as it is."""
        order = decide(prediction, current, self.thresholds)
        return None if order == HOLD else order
