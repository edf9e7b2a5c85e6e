"""DOPE's configuration: one frozen struct per component, read from TOML with environment overrides.

Unknown fields are rejected and every error names the field at fault::

    [collector]
    source = "synthetic"
    symbols = ["BTCUSDT", "ETHUSDT"]

    [bars]
    interval = "10s"

An environment variable ``DOPE_<SECTION>__<FIELD>`` overrides one field; its
value is read as a TOML value when it parses as one (``'["BTCUSDT"]'``, ``5``,
``true``) and as a plain string otherwise::

    DOPE_COLLECTOR__SOURCE=replay DOPE_BARS__INTERVAL=1m dope collect
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from dope.bars.interval import parse_interval
from dope.errors import UserError

ENV_PREFIX = "DOPE_"


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message names the file and the field."""


class _Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config struct: frozen, and unknown fields are an error."""


class BarsConfig(_Config, frozen=True):
    """Bar policy. ``close_on="event_time"``: a bar closes when a trade past its end + grace arrives;
    ``"clock"``: also when the clock passes it (live mode, so quiet markets still get bars)."""

    interval: str = "10s"
    grace_ms: int = 2_000
    emit_empty: bool = True
    close_on: Literal["event_time", "clock"] = "clock"

    def __post_init__(self) -> None:
        parse_interval(self.interval)
        if self.grace_ms < 0:
            raise ValueError(f"grace_ms must be >= 0, got {self.grace_ms}")

    @property
    def interval_ms(self) -> int:
        return parse_interval(self.interval)


class StoreConfig(_Config, frozen=True):
    """Where the Parquet dataset lives."""

    path: str = "var/store"


class BusConfig(_Config, frozen=True):
    """ZeroMQ endpoints (tcp://host:port or ipc://path) and flow-control settings.

    ``snapshot = ""`` serves no snapshots (no late-joiner catch-up); ``snapshot_bars``
    is how many recent bars per topic a publisher keeps for late joiners; a HWM
    of 0 means unbounded; ``linger_ms`` is how long closing waits for queued messages.
    """

    publish: str = "tcp://127.0.0.1:5555"
    snapshot: str = "tcp://127.0.0.1:5556"
    send_hwm: int = 100_000
    receive_hwm: int = 100_000
    heartbeat_ms: int = 1_000
    snapshot_bars: int = 360
    linger_ms: int = 1_000

    def __post_init__(self) -> None:
        for name in ("publish", "snapshot"):
            endpoint = getattr(self, name)
            if (endpoint or name == "publish") and not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"bus.{name} must be a tcp://, ipc:// or inproc:// endpoint, got {endpoint!r}")
        for name in ("send_hwm", "receive_hwm", "snapshot_bars", "linger_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"bus.{name} must be >= 0, got {getattr(self, name)}")
        if self.heartbeat_ms <= 0:
            raise ValueError(f"bus.heartbeat_ms must be > 0, got {self.heartbeat_ms}")


class BinanceConfig(_Config, frozen=True):
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


class ReplayConfig(_Config, frozen=True):
    """Replay of Binance public data files (bundled real trades when ``files`` is empty). ``speed`` 0 = as fast as possible."""

    files: tuple[str, ...] = ()
    speed: float = 0.0
    batch_size: int = 1000
    skip_bad_rows: bool = False


class SyntheticConfig(_Config, frozen=True):
    """The seeded synthetic market. ``speed`` 0 = as fast as possible, 1 = real time."""

    seed: int = 7
    start: str = "2024-01-01T00:00:00Z"
    duration: str = "1h"
    speed: float = 0.0
    params: str = ""  # fitted parameter file; "" = the one packaged with DOPE
    rate_scale: float = 1.0  # multiplies every symbol's trade rate (fewer trades for light tests)

    def __post_init__(self) -> None:
        if self.seed < 0 or self.rate_scale <= 0 or self.speed < 0:
            raise ValueError("synthetic: seed and speed must be >= 0, rate_scale > 0")


class CollectorConfig(_Config, frozen=True):
    """What the collector listens to and how often it writes to the store."""

    source: Literal["synthetic", "replay", "binance"] = "replay"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    flush_every_bars: int = 50
    service_name: str = "collector"


class DopeConfig(_Config, frozen=True):
    """The whole configuration."""

    collector: CollectorConfig = CollectorConfig()
    bars: BarsConfig = BarsConfig()
    store: StoreConfig = StoreConfig()
    bus: BusConfig = BusConfig()
    binance: BinanceConfig = BinanceConfig()
    replay: ReplayConfig = ReplayConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    log_level: str = "INFO"


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> DopeConfig:
    """Read ``path`` (TOML; None = defaults only), apply ``DOPE_*`` overrides, validate."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        raw = _read_toml(Path(path))
    overrides = env_overrides(os.environ if environ is None else environ)
    if overrides:
        origin += " + environment"
    return config_from_dict(_merge(raw, overrides), origin)


def config_from_dict(raw: Mapping[str, Any], origin: str = "config") -> DopeConfig:
    """Validate a nested mapping into ``DopeConfig``; errors say where and which field."""
    try:
        return msgspec.convert(raw, DopeConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid configuration ({origin}): {exc}") from None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``DOPE_SECTION__FIELD=value`` variables as a nested mapping."""
    nested: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _parse_env_value(text)
    return nested


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def with_overrides(config: DopeConfig, overrides: Mapping[str, Any], origin: str = "command line") -> DopeConfig:
    """``config`` with some fields replaced (nested mapping, e.g. ``{"bars": {"interval": "1m"}}``), validated."""
    return config_from_dict(_merge(msgspec.to_builtins(config), overrides), origin)
