"""Every message that travels on DOPE's bus, as frozen msgspec structs.

Each message carries the symbol it is about, its event time (integer epoch
milliseconds, UTC), the name of the publisher that sent it and that publisher's
sequence number for the message's topic (set by the bus on publish, so a
subscriber can detect gaps). The schema version ``v`` lets a receiver refuse a
message written by an incompatible producer.

>>> msg = Trade(symbol="BTCUSDT", event_time=1, trade_id=7, price=1.0, qty=2.0, is_buyer_maker=False)
>>> decode(encode(msg)) == msg
True
"""

from __future__ import annotations

from typing import Final

import msgspec

SCHEMA_VERSION: Final = 1


class SchemaVersionError(ValueError):
    """A message was written with a schema version this code does not speak."""


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Fields shared by every message."""

    symbol: str
    event_time: int
    seq: int = 0
    source: str = ""
    v: int = SCHEMA_VERSION


class Trade(Message, frozen=True, tag="trade"):
    """One trade (or one Binance aggregate trade) as DOPE sees it.

    ``trade_id`` is the id used for de-duplication (the aggregate id for
    aggTrades); ``first_trade_id``..``last_trade_id`` is the range of raw trade
    ids it covers (equal to ``trade_id`` for a raw trade), so a bar's ``count``
    is the number of raw trades, as in Binance's klines. ``event_time`` is the
    trade time. ``is_buyer_maker`` true means the aggressor sold.
    """

    trade_id: int
    price: float
    qty: float
    is_buyer_maker: bool
    first_trade_id: int = -1
    last_trade_id: int = -1

    @property
    def raw_count(self) -> int:
        """Number of raw exchange trades this message stands for."""
        if self.first_trade_id < 0:
            return 1
        return self.last_trade_id - self.first_trade_id + 1

    @property
    def raw_first_id(self) -> int:
        """First raw trade id covered (the trade id itself for a raw trade)."""
        return self.trade_id if self.first_trade_id < 0 else self.first_trade_id

    @property
    def raw_last_id(self) -> int:
        """Last raw trade id covered (the trade id itself for a raw trade)."""
        return self.trade_id if self.last_trade_id < 0 else self.last_trade_id


class Bar(Message, frozen=True, tag="bar"):
    """One OHLCV bar, with Binance's kline columns plus what DOPE needs.

    ``event_time`` is the bar's ``close_time`` (``open_time + interval - 1``).
    An interval without trades is still a bar: ``empty`` is true, prices carry
    the previous close, volumes are zero and the trade-id range is ``-1``.
    """

    interval_ms: int
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    count: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    vwap: float
    empty: bool
    first_trade_id: int
    last_trade_id: int


class Heartbeat(Message, frozen=True, tag="heartbeat"):
    """A sign of life from a service, with its counters.

    ``symbol`` is ``"*"`` when the heartbeat is about the whole service.
    """

    service: str
    interval_ms: int
    counters: dict[str, int] = {}


class LateTrades(Message, frozen=True, tag="late_trades"):
    """Trades that arrived after their bar was closed: counted, never silently dropped."""

    interval_ms: int
    bar_open_time: int
    count: int
    volume: float


class Features(Message, frozen=True, tag="features"):
    """One feature vector of a bar: ``event_time`` is the bar's ``close_time``.

    ``values`` follow the order of the feature set's names; ``feature_version``
    lets a model refuse vectors of another definition.
    """

    open_time: int
    feature_set: str
    feature_version: str
    values: list[float]


class Score(Message, frozen=True, tag="score"):
    """One model's answer for one feature vector (``open_time`` names the bar).

    ``prediction`` is the forecast forward log return; ``latency_us`` the time
    the model took from receiving the features to publishing this score.
    ``abstained`` (``warmup``, ``bad_input``, ``bad_prediction``) says the model read
    the vector and has no prediction for it (``prediction`` is NaN then), so the
    rendezvous need not wait for it.
    """

    open_time: int
    model_id: str
    model_kind: str
    feature_version: str
    prediction: float
    latency_us: int
    abstained: str = ""


class Prediction(Message, frozen=True, tag="prediction"):
    """What the rendezvous chose for one bar, with its provenance.

    ``prediction`` is None ("no prediction") when no eligible model answered in
    time; ``chosen_by`` says why the chosen model won (``champion``, ``fallback``
    or ``none``); ``answered``/``missed`` list model ids; ``pending`` the models whose
    scores were still awaited when the choice was made (live, a prediction leaves as soon as
    no later score could change it); ``latencies_us`` maps every answering model to its
    latency; ``roles`` maps every model the round waited for to its role when the round
    opened (what ``chosen_by`` was decided on).
    """

    open_time: int
    prediction: float | None
    model_id: str
    chosen_by: str
    deadline_ms: int
    answered: list[str] = []
    missed: list[str] = []
    latencies_us: dict[str, int] = {}
    roles: dict[str, str] = {}
    pending: list[str] = []


class Decision(Message, frozen=True, tag="decision"):
    """The trader's decision at a bar close: ``action`` is ``buy``, ``sell`` or ``hold``."""

    open_time: int
    prediction: float | None
    action: str
    target_position: int
    reason: str


class Fill(Message, frozen=True, tag="fill"):
    """An executed order (paper or exchange): quantity, price, fee, and the order's client id."""

    client_order_id: str
    side: str
    qty: float
    price: float
    fee: float
    fee_asset: str


class Equity(Message, frozen=True, tag="equity"):
    """The trader's marked-to-market state after a bar, beside buy-and-hold."""

    open_time: int
    cash: float
    position: float
    equity: float
    buy_and_hold: float
    kill_switch: bool = False


class Scorecard(Message, frozen=True, tag="scorecard"):
    """A model's live scorecard for one symbol, published by the rendezvous (see ``docs/rendezvous.md``).

    Counts are since the scorecard began (it survives restarts); latency percentiles
    cover the last ``latency_window`` answers, ``ic`` the last ``window`` realised
    outcomes; ``pnl`` is the equity change (quote currency) of the trader's rule on this model's
    predictions alone, filled at the next open, and ``trades`` its fills (see ``dope.rendezvous.shadow``).
    ``divergence``/``divergence_corr`` (canaries only) compare its predictions with the
    champion's over the last rounds; ``divergence_alarm`` is set while above the threshold.
    A statistic without enough data is None.
    """

    model_id: str
    role: str
    rounds: int
    answered: int
    misses: int
    late: int
    rejected: int
    chosen: int
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    arrival_p50_ms: float | None = None
    arrival_p99_ms: float | None = None
    realised: int = 0
    rmse: float | None = None
    mae: float | None = None
    hit_rate: float | None = None
    ic: float | None = None
    pnl: float = 0.0
    trades: int = 0
    divergence: float | None = None
    divergence_corr: float | None = None
    divergence_alarm: bool = False


class ModelHealth(Message, frozen=True, tag="health"):
    """The champion's health on one symbol, published by the decoy's monitor (see ``docs/loop.md``).

    ``psi``/``ks`` follow ``feature_names`` (empty until the window of ``window`` live vectors is
    full or while no reference is loaded); ``prediction_psi``/``prediction_ks`` compare the
    champion's live predictions with its reference predictions (None: not enough yet).
    ``drift_psi``/``drift_ks`` are the alarm levels. Data quality over the last bars: ``gap_rate``
    (missing bar open times), ``empty_rate`` (bars without trades); ``late_trades`` counts trades
    that came after their bar closed, ``nonfinite`` the NaN/inf live values left out, since the start.
    ``alarm`` is set while drift is above a level (raised at ``alarm_since``, event time; ``reason``
    names the worst statistic); a trainer subscribing to ``health.*`` retrains early on it.
    """

    model_id: str
    window: int
    feature_names: list[str] = []
    psi: list[float] = []
    ks: list[float] = []
    prediction_psi: float | None = None
    prediction_ks: float | None = None
    drift_psi: float = 0.0
    drift_ks: float = 0.0
    gap_rate: float = 0.0
    empty_rate: float = 0.0
    late_trades: int = 0
    nonfinite: int = 0
    stale: bool = False
    alarm: bool = False
    alarm_since: int = 0
    reason: str = ""


class LoopProgress(Message, frozen=True, tag="loop"):
    """The loop trainer's barrier for a replayed or synthetic source (``docs/loop.md``, Determinism).

    The source may go on until it has published a trade of ``symbol`` at or after ``hold_ms`` plus the
    bar grace (the bar closing at ``hold_ms`` is then complete), and waits there for a newer hold.
    ``hold_ms`` < 0: no hold; 0: hold at the first multiple of ``every_ms`` after the source's first trade.
    """

    hold_ms: int
    every_ms: int = 0


AnyMessage = (Trade | Bar | Heartbeat | LateTrades | Features | Score | Prediction | Decision | Fill | Equity
              | Scorecard | ModelHealth | LoopProgress)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)


def encode(msg: AnyMessage) -> bytes:
    """Serialize a message to msgpack bytes."""
    return _encoder.encode(msg)


def decode(data: bytes) -> AnyMessage:
    """Parse msgpack bytes into a message, refusing unknown kinds and versions.

    Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for garbage or
    a wrong shape and ``SchemaVersionError`` for another schema version.
    """
    msg = _decoder.decode(data)
    if msg.v != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{type(msg).__name__} has schema version {msg.v}, this build speaks {SCHEMA_VERSION}"
        )
    return msg


def topic_of(msg: AnyMessage) -> str:
    """The bus topic of a message: ``<kind>.<symbol>`` (for example ``bar.BTCUSDT``)."""
    return f"{type(msg).__struct_config__.tag}.{msg.symbol}"
