"""The settings of one threshold backtest."""

from __future__ import annotations

import math

import msgspec

from dope.trading.rule import Costs, Thresholds


class BacktestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Thresholds, costs and sizing of a threshold backtest (see :mod:`dope.backtest` for the rules).

    ``fee_rate`` is charged per side on the traded notional (Binance spot: 0.1%);
    ``slippage_bps`` moves every fill against the trader (buy at ``open * (1 + s)``,
    sell at ``open * (1 - s)``, ``s = slippage_bps / 10_000``); ``fraction`` of the
    equity (cash when flat) goes into each new position, fees included.

    >>> BacktestConfig(upper=0.001, lower=-0.001).fee_rate
    0.001
    """

    upper: float
    lower: float
    fee_rate: float = 0.001
    slippage_bps: float = 0.0
    allow_short: bool = False
    initial_cash: float = 10_000.0
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if math.isnan(self.upper) or math.isnan(self.lower):
            raise ValueError("upper and lower thresholds must be numbers, not NaN")
        if self.lower > self.upper:
            raise ValueError(f"lower threshold {self.lower} is above upper threshold {self.upper}")
        if not 0.0 <= self.fee_rate < 1.0:
            raise ValueError(f"fee_rate must be in [0, 1), got {self.fee_rate}")
        if not 0.0 <= self.slippage_bps < 10_000.0:
            raise ValueError(f"slippage_bps must be in [0, 10000), got {self.slippage_bps}")
        if not (self.initial_cash > 0 and math.isfinite(self.initial_cash)):
            raise ValueError(f"initial_cash must be a positive number, got {self.initial_cash}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of the price."""
        return self.slippage_bps / 10_000.0

    def with_thresholds(self, upper: float, lower: float) -> BacktestConfig:
        """The same costs and sizing with other thresholds."""
        return msgspec.structs.replace(self, upper=upper, lower=lower)

    def thresholds(self) -> Thresholds:
        """The strategy's thresholds, as the trading rule takes them."""
        return Thresholds(self.upper, self.lower, self.allow_short)

    def costs(self) -> Costs:
        """Fees, slippage and sizing, as the trading rule takes them."""
        return Costs(self.fee_rate, self.slippage, self.fraction)
