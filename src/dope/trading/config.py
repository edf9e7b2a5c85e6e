"""The trading settings: the threshold strategy, its costs and sizing, and the live trader's risk limits.

The backtest runs a :class:`StrategyConfig` (``dope.backtest.BacktestConfig`` is this class) and the
live trader a :class:`TradingConfig` (the strategy plus :class:`RiskConfig`), which the application's
``[trader]`` section extends with its broker and service settings (``dope.config.TraderConfig``).

>>> StrategyConfig(upper=0.001, lower=-0.001).costs()
Costs(fee_rate=0.001, slippage=0.0, fraction=1.0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # the rule imports numba: loaded when a strategy asks, not by every service's config
    from dope.trading.rule import Costs, Thresholds


class StrategyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Thresholds, costs and sizing of the threshold strategy (see ``docs/trading.md`` for the rules).

    ``fee_rate`` is charged per side on the traded notional (Binance spot: 0.1%);
    ``slippage_bps`` moves every fill against the trader (buy at ``open * (1 + s)``,
    sell at ``open * (1 - s)``, ``s = slippage_bps / 10_000``); ``fraction`` of the
    equity (cash when flat) goes into each new position, fees included.
    """

    upper: float = 0.0005
    lower: float = -0.0005
    allow_short: bool = False
    fraction: float = 1.0
    initial_cash: float = 10_000.0
    fee_rate: float = 0.001
    slippage_bps: float = 0.0

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

    def with_thresholds(self, upper: float, lower: float) -> StrategyConfig:
        """The same costs and sizing with other thresholds."""
        return msgspec.structs.replace(self, upper=upper, lower=lower)

    def thresholds(self) -> Thresholds:
        """The strategy's thresholds, as the trading rule takes them."""
        from dope.trading.rule import Thresholds

        return Thresholds(self.upper, self.lower, self.allow_short)

    def costs(self) -> Costs:
        """Fees, slippage and sizing, as the trading rule takes them."""
        from dope.trading.rule import Costs

        return Costs(self.fee_rate, self.slippage, self.fraction)

    def strategy(self) -> StrategyConfig:
        """Only the strategy's settings (of a larger config, e.g. the trader's: what a backtest of it runs)."""
        return StrategyConfig(**{name: getattr(self, name) for name in StrategyConfig.__struct_fields__})


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The trader's risk limits (see ``docs/trading.md``); 0 switches a limit off.

    ``max_daily_loss`` (quote currency) and ``max_daily_loss_fraction`` (of the equity at the
    start of the UTC day) trip the kill switch: flat, and no new entries until the next UTC day
    or a manual reset. A prediction that arrives more than ``max_prediction_delay_ms`` after its
    bar (trader's clock), or is for another bar than the latest, is stale; so is a price whose bar
    closed more than ``max_price_age_ms`` before the trader's clock (live only: 0 on replays).
    """

    max_position_units: float = 0.0
    max_position_notional: float = 0.0
    max_daily_loss: float = 0.0
    max_daily_loss_fraction: float = 0.0
    max_prediction_delay_ms: int = 5_000
    max_price_age_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("max_position_units", "max_position_notional", "max_daily_loss", "max_daily_loss_fraction",
                     "max_prediction_delay_ms", "max_price_age_ms"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):
                raise ValueError(f"trader.risk.{name} must be a number >= 0, got {value}")
        if self.max_daily_loss_fraction >= 1:
            raise ValueError(f"trader.risk.max_daily_loss_fraction must be < 1, got {self.max_daily_loss_fraction}")


class TradingConfig(StrategyConfig, frozen=True):
    """What the live trader of one symbol runs: the strategy and the risk limits."""

    risk: RiskConfig = RiskConfig()
