"""Open the trade source the configuration names (imports only the one needed)."""

from __future__ import annotations

from dope.clock import Clock, LiveClock
from dope.config import DopeConfig
from dope.market.base import TradeSource


def open_source(config: DopeConfig) -> tuple[TradeSource, Clock | None]:
    """The configured source, and the clock that closes quiet bars (None: event time only).

    Replays and the synthetic market close bars on event time, so their runs
    are deterministic; the live exchange also closes them on the wall clock.
    """
    symbols = list(config.collector.symbols)
    if config.collector.source == "replay":
        from dope.market.replay import ReplaySource

        return ReplaySource.from_config(config.replay, symbols), None
    if config.collector.source == "synthetic":
        from dope.market.synthetic_trades import SyntheticSource

        return SyntheticSource.from_config(config.synthetic, symbols), None
    from dope.market.binance import BinanceSource

    return BinanceSource(config.binance, symbols), LiveClock()


def backfills_history(config: DopeConfig) -> bool:
    """Whether the configured source can backfill trades from a past time (Binance ``aggTrades``)."""
    return config.collector.source == "binance" and config.binance.stream == "aggTrade"
