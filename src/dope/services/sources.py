"""Open the trade source the configuration names (imports only the one needed)."""

from __future__ import annotations

from dope.clock import Clock, LiveClock
from dope.config import DopeConfig
from dope.market.base import TradeSource
from dope.timeparse import parse_duration, parse_time


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
        from dope.market.synthetic_params import load_params
        from dope.market.synthetic_trades import SyntheticSource

        synthetic = config.synthetic
        return SyntheticSource(symbols, seed=synthetic.seed, start_ms=parse_time(synthetic.start),
                               duration_ms=parse_duration(synthetic.duration) if synthetic.duration else None,
                               speed=synthetic.speed, params=load_params(synthetic.params or None),
                               rate_scale=synthetic.rate_scale, regimes=synthetic.regimes), None
    from dope.market.binance import BinanceSource

    return BinanceSource(config.binance, symbols), LiveClock()


def backfills_history(config: DopeConfig) -> bool:
    """Whether the configured source can backfill trades from a past time (Binance ``aggTrades``)."""
    return config.collector.source == "binance" and config.binance.stream == "aggTrade"
