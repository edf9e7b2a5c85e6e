"""Binance live trade source: one combined websocket for all symbols, REST backfill, no trade lost or doubled.

Every (re)connect is followed by a REST backfill from the last trade id seen (``/api/v3/aggTrades``
``fromId``; ``startTime`` = the resume time on the first start), so what the stream missed while
down is fetched. Trades from both paths go through one :class:`Sequencer` per symbol, which drops
duplicates and releases trades in increasing, contiguous id order; a hole that outlives
``gap_timeout_ms`` is filled from REST too. Drops, stalls, ``serverShutdown`` and the 24 h cut all
lead to a reconnect with exponential backoff and full jitter. Malformed frames are counted in
``counters``, logged (logger ``dope.market.binance``) and skipped.

Production, testnet and a fake differ only by ``BinanceConfig.rest_url`` / ``ws_url``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial

import aiohttp

from dope.clock import Clock, LiveClock
from dope.market.base import UnknownSymbolError, trade_problem
from dope.market.binance_rest import Backoff, BinanceAPIError, BinanceRest, sleep_ms
from dope.market.binance_sequencer import Sequencer
from dope.market.binance_wire import (
    MalformedFrame,
    ServerShutdown,
    StreamReply,
    parse_exchange_info,
    parse_rest_agg_trades,
    parse_rest_trades,
    parse_server_time,
    parse_stream_frame,
    stream_names,
    stream_symbol,
)
from dope.market.config import BinanceConfig
from dope.messages import Trade

__all__ = ["BinanceAPIError", "BinanceSource", "MalformedFrame", "parse_stream_frame"]

log = logging.getLogger("dope.market.binance")

COUNTERS = (
    "connects", "disconnects", "stalls", "server_shutdowns", "malformed", "duplicates", "out_of_order",
    "gap_backfills", "backfill_requests", "backfill_trades", "rate_limited", "ip_banned", "server_errors",
    "rest_errors", "forbidden", "bad_bodies", "connect_errors", "unrecoverable_trades", "control_replies", "trades",
)
BATCH_MAX = 5_000


@dataclass(frozen=True, slots=True)
class _Closed:
    """The websocket ended; ``reason`` says how."""

    reason: str


_PING = object()
"""Marker the reader puts on the queue for a server ping: the connection is alive."""


class BinanceSource:
    """Trades of ``symbols`` from Binance (or anything that speaks its protocol), as a ``TradeSource``."""

    def __init__(self, config: BinanceConfig, symbols: list[str], *, clock: Clock | None = None,
                 rng_seed: int | None = None) -> None:
        if not symbols:
            raise ValueError("BinanceSource needs at least one symbol")
        self.config = config
        self.symbols = [s.upper() for s in symbols]
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._clock: Clock = clock or LiveClock()
        self._backoff = Backoff(config.reconnect_min_ms, config.reconnect_max_ms, random.Random(rng_seed))
        self._seqs: dict[str, Sequencer] = {}
        self._rest: BinanceRest | None = None
        self.is_live = False
        """True while streaming with the backfill done: nothing is missing up to now."""

    @property
    def stream_url(self) -> str:
        """The combined-stream URL for all symbols."""
        names = "/".join(stream_names(self.symbols, self.config.stream))
        return f"{self.config.ws_url.rstrip('/')}/stream?streams={names}"

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        """Batches of trades, per symbol in increasing id order, from ``resume`` (symbol -> time ms) on."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.request_timeout_ms / 1000)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._rest = BinanceRest(http, self.config.rest_url, self.counters, self._backoff, self._clock,
                                     self.config.request_timeout_ms)
            await self.check_symbols()
            await self._init_sequencers(resume)
            attempt = 0
            while True:
                async for batch in self._connection(http):
                    attempt = 0
                    if batch:
                        self.counters["trades"] += len(batch)
                        yield batch
                self.counters["disconnects"] += 1
                await sleep_ms(self._clock, self._backoff.delay_ms(attempt))
                attempt += 1

    async def check_symbols(self) -> None:
        """Raise :class:`UnknownSymbolError` naming every configured symbol Binance does not list."""
        listed = await self._api().get("/api/v3/exchangeInfo", None, parse_exchange_info)
        unknown = [s for s in self.symbols if s not in listed]
        if unknown:
            raise UnknownSymbolError(
                f"unknown Binance symbol(s) {', '.join(unknown)}: not listed by "
                f"{self.config.rest_url}/api/v3/exchangeInfo")
        for symbol in self.symbols:
            if listed[symbol] != "TRADING":
                log.warning("Binance symbol %s has status %s, expect no trades", symbol, listed[symbol])

    def _api(self) -> BinanceRest:
        if self._rest is None:
            raise RuntimeError("BinanceSource REST client used outside trades()")
        return self._rest

    async def _init_sequencers(self, resume: Mapping[str, int]) -> None:
        if self._seqs:
            return
        missing = [s for s in self.symbols if s not in resume]
        now = await self._api().get("/api/v3/time", None, parse_server_time) if missing else 0
        self._seqs = {s: Sequencer(min_time=resume.get(s, now)) for s in self.symbols}

    # ---- one websocket connection -------------------------------------------------------------

    async def _connection(self, http: aiohttp.ClientSession) -> AsyncIterator[list[Trade]]:
        """Connect, backfill, then stream until the connection ends."""
        try:
            ws = await http.ws_connect(self.stream_url, autoping=False, heartbeat=None, max_msg_size=0)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.counters["connect_errors"] += 1
            log.warning("Binance websocket connect to %s failed: %r", self.config.ws_url, exc)
            return
        self.counters["connects"] += 1
        queue: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(_read_frames(ws, queue))
        try:
            for symbol in self.symbols:
                async for batch in self._backfill(symbol):
                    yield batch
            self._last_frame = _loop_time()
            self.is_live = True
            async for batch in self._stream(queue):
                yield batch
        finally:
            self.is_live = False
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.close()

    async def _stream(self, queue: asyncio.Queue[object]) -> AsyncIterator[list[Trade]]:
        """Batches from the frames the reader queued, until the connection ends or stalls."""
        stall_s = self.config.stall_timeout_ms / 1000
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=min(stall_s, self._gap_tick_s()))
            except TimeoutError:
                first = None
                if _loop_time() - self._last_frame >= stall_s:
                    self.counters["stalls"] += 1
                    log.warning("Binance stream stalled (no frame for %.1f s); reconnecting", stall_s)
                    return
            frames = [first] if first is not None else []
            while frames and len(frames) < BATCH_MAX and not queue.empty():
                frames.append(queue.get_nowait())
            out, ended = self._handle(frames)
            out.extend(await self._fill_gaps())
            if out:
                yield out
            if ended:
                return

    _last_frame: float = 0.0

    def _gap_tick_s(self) -> float:
        return max(0.01, self.config.gap_timeout_ms / 4000)

    def _handle(self, frames: list[object]) -> tuple[list[Trade], bool]:
        """Parse and sequence frames; True when the connection is over."""
        out: list[Trade] = []
        now = _loop_time()
        if frames:
            self._last_frame = now
        for frame in frames:
            if frame is _PING:
                continue
            if isinstance(frame, _Closed):
                log.warning("Binance websocket closed: %s; reconnecting", frame.reason)
                return out, True
            if self._handle_frame(frame, out, now):
                return out, True
        return out, False

    def _handle_frame(self, frame: object, out: list[Trade], now: float) -> bool:
        assert isinstance(frame, str | bytes)
        try:
            event = parse_stream_frame(frame)
        except MalformedFrame as exc:
            self.counters["malformed"] += 1
            log.warning("malformed Binance frame for %s skipped: %s", stream_symbol(frame), exc)
            return False
        if isinstance(event, Trade):
            self._offer(event, out, now)
            return False
        if isinstance(event, ServerShutdown):
            self.counters["server_shutdowns"] += 1
            log.warning("Binance announced serverShutdown at %d; reconnecting", event.event_time)
            return True
        assert isinstance(event, StreamReply)
        self.counters["control_replies"] += 1
        return False

    def _offer(self, trade: Trade, out: list[Trade], now: float) -> None:
        """Validate, then sequence: a rejected trade never marks its id as seen (the genuine one may follow)."""
        seq = self._seqs.get(trade.symbol)
        problem = "unsubscribed symbol" if seq is None else trade_problem(trade)
        if problem is not None:
            self.counters["malformed"] += 1
            log.warning("Binance trade %d of %s rejected (%s): price %r, qty %r", trade.trade_id, trade.symbol,
                        problem, trade.price, trade.qty)
            return
        assert seq is not None
        dup, ooo = seq.duplicates, seq.out_of_order
        seq.offer(trade, out, now)
        self.counters["duplicates"] += seq.duplicates - dup
        self.counters["out_of_order"] += seq.out_of_order - ooo

    async def _fill_gaps(self) -> list[Trade]:
        """Backfill every symbol whose id gap has lasted longer than ``gap_timeout_ms``."""
        out: list[Trade] = []
        limit_s = self.config.gap_timeout_ms / 1000
        for symbol, seq in self._seqs.items():
            if seq.gap_since is not None and _loop_time() - seq.gap_since >= limit_s:
                self.counters["gap_backfills"] += 1
                log.info("Binance %s: trade id %s missing for %.1f s; backfilling", symbol, seq.next_id, limit_s)
                async for batch in self._backfill(symbol):
                    out.extend(batch)
        return out

    # ---- REST backfill --------------------------------------------------------------------------

    async def _backfill(self, symbol: str) -> AsyncIterator[list[Trade]]:
        """Everything REST has for ``symbol`` from the next expected id (or the resume time) on."""
        if self.config.stream == "trade":
            yield await self._backfill_recent(symbol)
            return
        seq = self._seqs[symbol]
        page = await self._first_page(symbol, seq)
        while page:
            yield self._sequence(symbol, page)
            if len(page) < self.config.backfill_limit:
                return
            page = await self._agg_page(symbol, {"fromId": page[-1].trade_id + 1})

    async def _first_page(self, symbol: str, seq: Sequencer) -> list[Trade]:
        if seq.next_id is not None:
            return await self._agg_page(symbol, {"fromId": seq.next_id})
        latest = await self._agg_page(symbol, {}, limit=1)
        page = await self._agg_page(symbol, {"startTime": seq.min_time})
        if page:
            seq.next_id = page[0].trade_id
        elif latest:
            seq.next_id = latest[-1].trade_id + 1
        return page

    async def _agg_page(self, symbol: str, params: dict[str, int], limit: int | None = None) -> list[Trade]:
        self.counters["backfill_requests"] += 1
        query: dict[str, str | int] = {"symbol": symbol, "limit": limit or self.config.backfill_limit, **params}
        return await self._api().get("/api/v3/aggTrades", query, partial(parse_rest_agg_trades, symbol=symbol))

    def _sequence(self, symbol: str, trades: list[Trade]) -> list[Trade]:
        out: list[Trade] = []
        now = _loop_time()
        for trade in trades:
            self._offer(trade, out, now)
        self.counters["backfill_trades"] += len(out)
        return out

    async def _backfill_recent(self, symbol: str) -> list[Trade]:
        """Raw-trade mode: only ``/api/v3/trades`` (recent) exists; older missing ids are reported lost."""
        self.counters["backfill_requests"] += 1
        query: dict[str, str | int] = {"symbol": symbol, "limit": self.config.backfill_limit}
        trades = await self._api().get("/api/v3/trades", query, partial(parse_rest_trades, symbol=symbol))
        seq = self._seqs[symbol]
        if trades and seq.next_id is None:
            seq.next_id = next((t.trade_id for t in trades if t.event_time >= seq.min_time), trades[-1].trade_id + 1)
        if trades and seq.next_id is not None and trades[0].trade_id > seq.next_id:
            out: list[Trade] = []
            lost = seq.skip_to(trades[0].trade_id, out, _loop_time())
            self.counters["unrecoverable_trades"] += lost
            log.error("Binance %s: %d raw trades too old for /api/v3/trades are lost", symbol, lost)
        return self._sequence(symbol, trades)


async def _read_frames(ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[object]) -> None:
    """Read the socket continuously (so pings are answered even when the consumer is slow)."""
    reason = "closed by server"
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                queue.put_nowait(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
                queue.put_nowait(_PING)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                reason = f"{msg.type.name} {msg.data!r} {msg.extra or ''}".strip()
                break
    except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
        reason = f"error {exc!r}"
    queue.put_nowait(_Closed(reason))


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
