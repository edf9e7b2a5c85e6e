"""The market sources' settings: Binance endpoints and client behaviour, replays, the synthetic market.

Their own types, composed by :class:`dope.config.DopeConfig` (sections ``[binance]``, ``[replay]``,
``[synthetic]``): this package does not import the application-wide configuration. Unknown fields are an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec

from dope.errors import UserError
from dope.timeparse import parse_time


class _MarketConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the market's config structs: frozen, and unknown fields are an error."""


class BinanceConfig(_MarketConfig, frozen=True):
    """Binance endpoints (production, testnet or a fake) and client behaviour."""

    rest_url: str = "https://api.binance.com"
    ws_url: str = "wss://stream.binance.com:9443"
    stream: Literal["aggTrade", "trade"] = "aggTrade"
    reconnect_min_ms: int = 250
    reconnect_max_ms: int = 30_000
    backfill_limit: int = 1000
    request_timeout_ms: int = 10_000
    stall_timeout_ms: int = 30_000
    """No frame (not even a ping) for this long: the stream is stalled, reconnect."""
    gap_timeout_ms: int = 2_000
    """A hole in the trade ids that lasts this long is filled from REST."""


class ReplayConfig(_MarketConfig, frozen=True):
    """Replay of Binance public data files (bundled real trades when ``files`` is empty). ``speed`` 0 = as fast as possible."""

    files: tuple[str, ...] = ()
    speed: float = 0.0
    batch_size: int = 1000
    skip_bad_rows: bool = False


class SyntheticRegime(_MarketConfig, frozen=True):
    """From market time ``start`` (ISO UTC or epoch ms) until the next regime, the synthetic market runs
    with these changes to its calibrated dynamics (see ``docs/synthetic.md``, Regimes).

    ``drift``: mean log return per day; ``vol_scale``/``rate_scale``: multiply the volatility and the
    trade rate; ``autocorr``: AR(1) coefficient of the model-step (10 s) returns, in (-1, 1).
    """

    start: str | int
    drift: float = 0.0
    vol_scale: float = 1.0
    rate_scale: float = 1.0
    autocorr: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.start, str):
            try:
                parse_time(self.start)
            except UserError as exc:
                raise ValueError(f"start: {exc}") from None
        if not math.isfinite(self.drift):
            raise ValueError(f"drift must be finite, got {self.drift}")
        for name in ("vol_scale", "rate_scale"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not -1 < self.autocorr < 1:
            raise ValueError(f"autocorr must be in (-1, 1), got {self.autocorr}")

    @property
    def start_ms(self) -> int:
        """``start`` in epoch milliseconds."""
        return self.start if isinstance(self.start, int) else parse_time(self.start)


class SyntheticConfig(_MarketConfig, frozen=True):
    """The seeded synthetic market. ``speed`` 0 = as fast as possible, 1 = real time.
    ``regimes``: scheduled switches of its dynamics, in increasing ``start`` order."""

    seed: int = 7
    start: str = "2024-01-01T00:00:00Z"
    duration: str = "1h"
    speed: float = 0.0
    params: str = ""  # fitted parameter file; "" = the one packaged with DOPE
    rate_scale: float = 1.0  # multiplies every symbol's trade rate (fewer trades for light tests)
    regimes: tuple[SyntheticRegime, ...] = ()

    def __post_init__(self) -> None:
        if self.seed < 0 or self.rate_scale <= 0 or self.speed < 0:
            raise ValueError("synthetic: seed and speed must be >= 0, rate_scale > 0")
        regime_starts(self.regimes)


def regime_starts(regimes: Sequence[SyntheticRegime]) -> list[int]:
    """The regimes' starts in epoch ms; ``ValueError`` unless they strictly increase."""
    starts = [regime.start_ms for regime in regimes]
    if starts != sorted(set(starts)):
        raise ValueError(f"synthetic.regimes: starts must strictly increase, got {starts}")
    return starts
