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
from dope.errors import ConfigError as ConfigError  # re-exported
from dope.loop.config import LoopConfig as LoopConfig  # composed: [loop]
from dope.market.config import BinanceConfig as BinanceConfig  # composed: [binance]
from dope.market.config import ReplayConfig as ReplayConfig  # composed: [replay]
from dope.market.config import SyntheticConfig as SyntheticConfig  # composed: [synthetic]
from dope.market.config import SyntheticRegime as SyntheticRegime  # re-exported
from dope.market.config import regime_starts as regime_starts  # re-exported
from dope.rendezvous.config import RendezvousConfig as RendezvousConfig  # composed: [rendezvous]
from dope.trading.config import RiskConfig as RiskConfig  # re-exported: the [trader.risk] section
from dope.trading.config import TradingConfig
from dope.transport.config import BusConfig as BusConfig  # composed: [bus]

ENV_PREFIX = "DOPE_"


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


class RegistryConfig(_Config, frozen=True):
    """Where trained model artifacts and their roles live (``dope train``, ``dope models``)."""

    path: str = "var/registry"


class CollectorConfig(_Config, frozen=True):
    """What the collector listens to and how often it writes to the store.

    Under ``dope up`` a replayed or synthetic source runs at most ``flow_window_bars`` bars (beyond
    the feature warm-up) ahead of the trader's decisions (credit-based flow control, 0 = off); it
    goes on without a decision after ``flow_liveness_ms`` of wall clock (a dead trader; logged).
    """

    source: Literal["synthetic", "replay", "binance"] = "replay"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    flush_every_bars: int = 50
    service_name: str = "collector"
    warmup_backfill: bool = True
    """Live start with nothing stored: backfill the feature warm-up history before streaming."""
    flow_window_bars: int = 256
    flow_liveness_ms: int = 10_000


class ServicesConfig(_Config, frozen=True):
    """Where each service publishes (its own endpoint; see ``docs/services.md``).

    ``collector = ""`` means ``bus.publish`` (the collector's historical endpoint).
    """

    collector: str = ""
    featurizer: str = "tcp://127.0.0.1:5557"
    decoy: str = "tcp://127.0.0.1:5558"
    rendezvous: str = "tcp://127.0.0.1:5559"
    trader: str = "tcp://127.0.0.1:5560"
    dashboard: str = "tcp://127.0.0.1:5561"
    trainer: str = "tcp://127.0.0.1:5562"

    def __post_init__(self) -> None:
        for name in ("collector", "featurizer", "decoy", "rendezvous", "trader", "dashboard", "trainer"):
            endpoint = getattr(self, name)
            if endpoint and not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"services.{name} must be a tcp://, ipc:// or inproc:// endpoint, got {endpoint!r}")


class ModelDeployConfig(_Config, frozen=True):
    """One model service: ``model`` is a registry id or ``"role:<role>"`` (follows the registry's roles).

    ``delay_ms`` and ``nan_every`` are for tests and drills only: sleep before each score is
    published; publish every ``nan_every``-th score with a NaN prediction (a broken model).
    ``snapshot_every``: a model that learns online (``learn_one``) is snapshotted after this many
    predictions per symbol (0 = never; docs/services.md).
    """

    model: str
    endpoint: str
    name: str = ""
    delay_ms: int = 0
    nan_every: int = 0
    snapshot_every: int = 1

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("models.deploy: model must be a registry id or role:<role>")
        if not self.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"models.deploy endpoint must be a tcp://, ipc:// or inproc:// endpoint, "
                             f"got {self.endpoint!r}")
        if self.delay_ms < 0 or self.nan_every < 0 or self.snapshot_every < 0:
            raise ValueError(f"models.deploy delay_ms, nan_every and snapshot_every must be >= 0, got "
                             f"{self.delay_ms}, {self.nan_every}, {self.snapshot_every}")


class ModelsConfig(_Config, frozen=True):
    """The deployed models (``[[models.deploy]]``): one model service process each.

    ``yield_ms``: live (wall-clock deadlines), a model the prediction does not wait for first (a challenger,
    shadow or canary while the champion answers) scores a vector this long after it arrived, so the
    champion's path to the decision has the CPUs (0: at once; below ``rendezvous.deadline_ms``).
    """

    deploy: tuple[ModelDeployConfig, ...] = ()
    yield_ms: int = 10

    def __post_init__(self) -> None:
        if self.yield_ms < 0:
            raise ValueError(f"models.yield_ms must be >= 0, got {self.yield_ms}")


class FeaturizerConfig(_Config, frozen=True):
    """The live feature stream: the default feature set at the bar interval, with optional context symbols.

    A bar waits for its context symbols' bars of the same open time until a bar ``context_wait_bars``
    intervals newer arrived, or the bus was quiet for ``context_idle_ms``; then they are missing (as
    offline). ``warm_from_store``: at start, read the last warm-up bars of every symbol from the store.
    """

    context_symbols: tuple[str, ...] = ()
    context_wait_bars: int = 1
    context_idle_ms: int = 2_000
    warm_from_store: bool = True
    service_name: str = "featurizer"


class SupervisorConfig(_Config, frozen=True):
    """``dope up``: which services, restart backoff, stop timeout, health and the metrics endpoint.

    ``metrics`` is ``host:port`` of the Prometheus endpoint (``""`` = none, port 0 = any free port);
    ``bootstrap`` lists the model kinds trained when the registry is empty.
    """

    services: tuple[str, ...] = ("featurizer", "models", "decoy", "rendezvous", "trader", "dashboard", "collector")
    restart_min_ms: int = 100
    restart_max_ms: int = 30_000
    stop_timeout_ms: int = 5_000
    heartbeat_timeout_ms: int = 5_000
    start_timeout_ms: int = 60_000
    metrics: str = "127.0.0.1:9464"
    bootstrap: tuple[str, ...] = ("zero", "ridge", "random_forest", "lstm")
    bootstrap_duration: str = "2d"

    def __post_init__(self) -> None:
        if not 0 < self.restart_min_ms <= self.restart_max_ms:
            raise ValueError("supervisor: need 0 < restart_min_ms <= restart_max_ms")
        if self.stop_timeout_ms <= 0 or self.heartbeat_timeout_ms <= 0 or self.start_timeout_ms <= 0:
            raise ValueError("supervisor: timeouts must be > 0")


class TraderConfig(TradingConfig, frozen=True):
    """The trader service: the trading (thresholds, sizing, costs, risk limits: :mod:`dope.trading.config`),
    the broker and where its state lives.

    ``broker = "binance"`` sends real orders (testnet or live, ``rest_url``; ``""`` = ``binance.rest_url``)
    only when also ``i_understand_real_orders = "yes"`` (env ``DOPE_TRADER__I_UNDERSTAND_REAL_ORDERS=yes``)
    or the service runs with ``--live``; keys come from ``BINANCE_API_KEY`` / ``BINANCE_API_SECRET``.
    ``symbols = ()`` trades the collector's symbols; each symbol has its own ``initial_cash``.
    """

    symbols: tuple[str, ...] = ()
    broker: Literal["paper", "binance"] = "paper"
    i_understand_real_orders: str = ""
    rest_url: str = ""
    recv_window_ms: int = 5_000
    max_order_age_ms: int = 0
    """An exchange order not sent within this of its decision is dropped (0 = half the bar interval)."""
    state_dir: str = "var/trader"
    journal_fsync: bool = True
    service_name: str = "trader"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.broker == "binance" and self.allow_short:
            raise ValueError("trader: the Binance spot broker cannot short; set allow_short = false")
        if not 0 < self.recv_window_ms <= 60_000:
            raise ValueError(f"trader: recv_window_ms must be in (0, 60000], got {self.recv_window_ms}")
        if self.max_order_age_ms < 0:
            raise ValueError(f"trader: max_order_age_ms must be >= 0 (0 = half the bar interval), "
                             f"got {self.max_order_age_ms}")


class DashboardConfig(_Config, frozen=True):
    """The live Bokeh dashboard: where it listens (127.0.0.1 unless told otherwise) and how much it keeps.

    ``allow_origins`` adds websocket origins (``host:port``) beyond the dashboard's own address;
    ``history_bars`` recent bars per symbol are read from the store when it starts; ``rollover``
    bounds every live series so it runs for days without growing.
    """

    address: str = "127.0.0.1"
    port: int = 5006
    allow_origins: tuple[str, ...] = ()
    history_bars: int = 360
    rollover: int = 2_000

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65_536:
            raise ValueError(f"dashboard.port must be in 0..65535, got {self.port}")
        if self.history_bars < 0 or self.rollover < 10:
            raise ValueError("dashboard: history_bars must be >= 0 and rollover >= 10")


class DecoyConfig(_Config, frozen=True):
    """The decoy: archives every feature vector under ``<store>/features``, and every score, prediction, decision
    and fill under ``<store>/live``, in batches of ``flush_every`` vectors (with the messages that came with them)."""

    flush_every: int = 100
    service_name: str = "decoy"

    def __post_init__(self) -> None:
        if self.flush_every < 1:
            raise ValueError(f"decoy.flush_every must be >= 1, got {self.flush_every}")


class DopeConfig(_Config, frozen=True):
    """The whole configuration."""

    collector: CollectorConfig = CollectorConfig()
    bars: BarsConfig = BarsConfig()
    store: StoreConfig = StoreConfig()
    registry: RegistryConfig = RegistryConfig()
    bus: BusConfig = BusConfig()
    binance: BinanceConfig = BinanceConfig()
    replay: ReplayConfig = ReplayConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    services: ServicesConfig = ServicesConfig()
    models: ModelsConfig = ModelsConfig()
    featurizer: FeaturizerConfig = FeaturizerConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    trader: TraderConfig = TraderConfig()
    dashboard: DashboardConfig = DashboardConfig()
    rendezvous: RendezvousConfig = RendezvousConfig()
    decoy: DecoyConfig = DecoyConfig()
    loop: LoopConfig = LoopConfig()
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.models.yield_ms and self.models.yield_ms >= self.rendezvous.deadline_ms:
            raise ValueError(f"models.yield_ms ({self.models.yield_ms}) must be below rendezvous.deadline_ms "
                             f"({self.rendezvous.deadline_ms}): a model standing in for the champion would always "
                             "miss the deadline (0 turns yielding off)")


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
