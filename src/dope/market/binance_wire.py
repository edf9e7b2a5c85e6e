"""Binance wire formats: typed msgspec decoders for stream frames and REST trade lists.

:func:`parse_stream_frame` is the hot path of the live source (and what the benchmark calls): one
combined-stream frame in, one :class:`~dope.messages.Trade` or control event out.

>>> line = ('{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1633998523963,"s":"NKNUSDT",'
...         '"a":15683430,"p":"0.35280000","q":"58.00000000","f":19862790,"l":19862790,'
...         '"T":1633998523963,"m":false,"M":true}}')
>>> t = parse_stream_frame(line)
>>> (t.symbol, t.trade_id, t.price, t.qty, t.first_trade_id, t.event_time)
('NKNUSDT', 15683430, 0.3528, 58.0, 19862790, 1633998523963)
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dope.messages import Trade


class AggTradeEvent(msgspec.Struct, tag_field="e", tag="aggTrade"):
    """``<symbol>@aggTrade`` payload (prices and quantities arrive as strings)."""

    E: int
    s: str
    a: int
    p: float
    q: float
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool


class TradeEvent(msgspec.Struct, tag_field="e", tag="trade"):
    """``<symbol>@trade`` payload."""

    E: int
    s: str
    t: int
    p: float
    q: float
    T: int
    m: bool


class ShutdownEvent(msgspec.Struct, tag_field="e", tag="serverShutdown"):
    """Sent before a planned server shutdown: reconnect."""

    E: int


class CombinedMessage(msgspec.Struct):
    """A combined-stream frame ``{"stream": ..., "data": ...}``."""

    stream: str
    data: AggTradeEvent | TradeEvent | ShutdownEvent


class RestAggTrade(msgspec.Struct):
    """One row of ``GET /api/v3/aggTrades``."""

    a: int
    p: float
    q: float
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool


class ErrorPayload(msgspec.Struct):
    """Binance's error body ``{"code": -1121, "msg": "Invalid symbol."}``."""

    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """The server announced a shutdown at ``event_time``."""

    event_time: int


@dataclass(frozen=True, slots=True)
class StreamReply:
    """Reply to a control request (SUBSCRIBE, LIST_SUBSCRIPTIONS, ...) or an error reply."""

    raw: str


class MalformedFrame(ValueError):
    """A frame that is not a valid Binance stream message; the message says what is wrong."""


StreamEvent = Trade | ServerShutdown | StreamReply

# strict=False: Binance sends decimals as strings; msgspec converts them to float in C.
_combined = msgspec.json.Decoder(CombinedMessage, strict=False)
_raw_event = msgspec.json.Decoder(AggTradeEvent | TradeEvent | ShutdownEvent, strict=False)
_rest_agg = msgspec.json.Decoder(list[RestAggTrade], strict=False)
_error = msgspec.json.Decoder(ErrorPayload)


def parse_stream_frame(raw: bytes | str) -> StreamEvent:
    """Decode one stream frame (combined or raw) into a Trade or a control event.

    Raises :class:`MalformedFrame` naming the problem (bad JSON, wrong field types, unknown event).
    """
    try:
        return _event(_combined.decode(raw).data)
    except msgspec.ValidationError as exc:
        return _not_combined(raw, exc)
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}; frame {_preview(raw)}") from None


def _event(data: AggTradeEvent | TradeEvent | ShutdownEvent) -> StreamEvent:
    if type(data) is AggTradeEvent:
        return Trade(symbol=data.s, event_time=data.T, trade_id=data.a, price=data.p, qty=data.q,
                     is_buyer_maker=data.m, first_trade_id=data.f, last_trade_id=data.l)
    if type(data) is TradeEvent:
        return Trade(symbol=data.s, event_time=data.T, trade_id=data.t, price=data.p, qty=data.q,
                     is_buyer_maker=data.m)
    assert isinstance(data, ShutdownEvent)
    return ServerShutdown(data.E)


def _not_combined(raw: bytes | str, combined_error: msgspec.ValidationError) -> StreamEvent:
    """A raw-stream payload, a control reply, or a malformed frame."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if '"stream"' not in text:
        try:
            return _event(_raw_event.decode(raw))
        except msgspec.ValidationError:
            pass
        if '"result"' in text or '"code"' in text:
            return StreamReply(text)
    raise MalformedFrame(f"{combined_error}; frame {_preview(raw)}")


def _preview(raw: bytes | str, size: int = 120) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return repr(text[:size])


def stream_symbol(raw: bytes | str) -> str:
    """Best-effort symbol a (possibly malformed) frame is about, for log messages ("?" if unknown)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    start = text.find('"stream":"')
    if start < 0:
        return "?"
    name = text[start + 10:text.find('"', start + 10)]
    return name.partition("@")[0].upper() or "?"


def parse_rest_agg_trades(raw: bytes, symbol: str) -> list[Trade]:
    """Decode a ``/api/v3/aggTrades`` body into Trades of ``symbol`` (raises ``msgspec`` errors)."""
    return [Trade(symbol=symbol, event_time=r.T, trade_id=r.a, price=r.p, qty=r.q, is_buyer_maker=r.m,
                  first_trade_id=r.f, last_trade_id=r.l) for r in _rest_agg.decode(raw)]


def parse_error(raw: bytes) -> ErrorPayload | None:
    """Binance's ``{"code","msg"}`` error body, or None when the body is something else."""
    try:
        return _error.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def stream_names(symbols: list[str], stream: str) -> list[str]:
    """Stream names for the symbols: ``["btcusdt@aggTrade", ...]``."""
    return [f"{s.lower()}@{stream}" for s in symbols]


class RestTrade(msgspec.Struct):
    """One row of ``GET /api/v3/trades``."""

    id: int
    price: float
    qty: float
    time: int
    isBuyerMaker: bool  # noqa: N815 - Binance's field name


_rest_trades = msgspec.json.Decoder(list[RestTrade], strict=False)


def parse_rest_trades(raw: bytes, symbol: str) -> list[Trade]:
    """Decode a ``/api/v3/trades`` body into raw Trades of ``symbol``."""
    return [Trade(symbol=symbol, event_time=r.time, trade_id=r.id, price=r.price, qty=r.qty,
                  is_buyer_maker=r.isBuyerMaker) for r in _rest_trades.decode(raw)]


class SymbolInfo(msgspec.Struct):
    """The part of an ``exchangeInfo`` symbol entry DOPE reads."""

    symbol: str
    status: str = "TRADING"


class ExchangeInfo(msgspec.Struct):
    """The part of ``GET /api/v3/exchangeInfo`` DOPE reads."""

    symbols: list[SymbolInfo]


_exchange_info = msgspec.json.Decoder(ExchangeInfo)


def parse_exchange_info(raw: bytes) -> dict[str, str]:
    """Symbol -> status from an ``exchangeInfo`` body."""
    return {s.symbol: s.status for s in _exchange_info.decode(raw).symbols}


class ServerTime(msgspec.Struct):
    """``GET /api/v3/time``."""

    serverTime: int  # noqa: N815 - Binance's field name


def parse_server_time(raw: bytes) -> int:
    """Epoch ms from a ``/api/v3/time`` body."""
    return msgspec.json.decode(raw, type=ServerTime).serverTime
