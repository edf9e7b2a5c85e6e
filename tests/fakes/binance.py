"""A fake Binance spot exchange: websocket trade streams and public REST, replaying real recorded trades.

It follows ``shared/binance-protocol.md`` so that the same client talks to it and to Binance:
combined (``/stream?streams=a/b``) and raw (``/ws/<stream>``) streams, server pings and the pong
timeout, SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS/SET_PROPERTY/GET_PROPERTY, the 24 h cut (short
here), ``serverShutdown``; REST ``/api/v3/{ping,time,exchangeInfo,aggTrades,trades,klines}`` with
``X-MBX-USED-WEIGHT-1M`` and Binance error payloads. Trades "happen" on an :class:`ExchangeClock`
that runs ``speed`` times real time or is stepped by the test; faults come from a :class:`FaultPlan`.

In a test::

    async with FakeBinance(config=FakeConfig(speed=100)) as fake:
        ...  # BinanceConfig(rest_url=fake.rest_url, ws_url=fake.ws_url)

As a process (prints ``PORT <n>`` once listening)::

    python -m tests.fakes.binance --port 0 --speed 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance_data import AggTrade, RawTrade, SymbolData, bundled_trade_files, load_files
from tests.fakes.binance_faults import MALFORMED_FRAMES, FaultPlan, ResponseFault, StreamFaults
from tests.fakes.binance_orders import read_params
from tests.fakes.binance_rest import (
    DEFAULT_ROUTES,
    ApiError,
    Handler,
    RestContext,
    WeightFn,
    load_exchange_info,
)

__all__ = ["ExchangeClock", "FakeBinance", "FakeConfig", "FaultPlan", "RequestRecord", "StreamFaults",
           "run_in_thread"]


class ExchangeClock:
    """Exchange time in epoch ms: ``speed`` x real time from ``start_ms`` (speed 0: only :meth:`step` moves it)."""

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        self.speed = speed
        self._base = start_ms
        self._wall0 = time.monotonic()

    def now_ms(self) -> int:
        return self._base + int((time.monotonic() - self._wall0) * 1000 * self.speed)

    def step(self, ms: int) -> None:
        """Move exchange time forward by ``ms``."""
        self._base += ms

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (time does not jump)."""
        self._base, self._wall0, self.speed = self.now_ms(), time.monotonic(), speed


@dataclass
class FakeConfig:
    """Knobs of the fake. Times in (real) seconds unless named ``_ms``."""

    speed: float = 1.0
    start_ms: int | None = None
    """Exchange time at start (None: just before the first replayed trade)."""
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    connection_lifetime_s: float = 24 * 3600.0
    tick_s: float = 0.005
    max_incoming_per_s: int = 5
    weight_limit: int = 6000
    shared_data: Path | None = None
    """``shared/data`` (for the real exchangeInfo capture); None = generated exchange info."""


@dataclass(frozen=True)
class RequestRecord:
    """One REST request the fake answered."""

    method: str
    path: str
    params: dict[str, str]
    status: int
    weight: int
    time_ms: int


class FakeBinance:
    """The fake exchange: one aiohttp app serving REST and websockets on 127.0.0.1."""

    def __init__(self, files: list[Path] | None = None, *, config: FakeConfig | None = None,
                 faults: FaultPlan | None = None) -> None:
        self.config = config or FakeConfig()
        self.faults = faults or FaultPlan()
        self.data: dict[str, SymbolData] = load_files(files or bundled_trade_files())
        start = self.config.start_ms if self.config.start_ms is not None else self.first_time_ms - 1
        self.clock = ExchangeClock(start, self.config.speed)
        self.requests: list[RequestRecord] = []
        self.routes: dict[tuple[str, str], tuple[WeightFn, Handler]] = dict(DEFAULT_ROUTES)
        self.connections = 0
        self.closed_reasons: list[str] = []
        self._rest = RestContext(self.data, load_exchange_info(self.config.shared_data, self.data), self.clock.now_ms)
        self._weights: dict[int, int] = {}
        self._live: set[_Connection] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def first_time_ms(self) -> int:
        return min(d.raw_times[0] for d in self.data.values())

    @property
    def last_time_ms(self) -> int:
        return max(d.raw_times[-1] for d in self.data.values())

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeBinance:
        app = web.Application()
        app.router.add_route("*", "/api/{tail:.*}", self._handle_rest)
        app.router.add_get("/stream", self._handle_ws)
        app.router.add_get("/ws", self._handle_ws)
        app.router.add_get("/ws/{stream}", self._handle_ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for conn in list(self._live):
            conn.abort("server stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinance:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kill_connections(self) -> int:
        """Abort every open websocket (no close frame); returns how many."""
        live = list(self._live)
        for conn in live:
            conn.abort("killed by test")
        return len(live)

    def used_weight(self) -> int:
        return self._weights.get(self.clock.now_ms() // 60_000, 0)

    # ---- REST ----------------------------------------------------------------------------------

    async def _handle_rest(self, request: web.Request) -> web.Response:
        params = await read_params(request)
        route = self.routes.get((request.method, request.path))
        if route is None:
            return self._answer(request, params, 0, 404, {"code": -1000, "msg": f"Unknown path {request.path}"})
        weight = route[0](params)
        used = self._add_weight(weight)
        fault = self.faults.take_rest_fault(request.path)
        if fault is not None and fault.body is not None:
            self.requests.append(RequestRecord(request.method, request.path, params, fault.status, weight,
                                               self.clock.now_ms()))
            return web.Response(status=fault.status, text=fault.body, content_type="text/html")
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            msg = fault.msg or _fault_message(fault.status)
            return self._answer(request, params, weight, fault.status, {"code": fault.code, "msg": msg}, headers)
        if used > self.config.weight_limit:
            retry = 60 - (self.clock.now_ms() // 1000) % 60
            body = {"code": -1003, "msg": f"Too much request weight used; current limit is "
                                          f"{self.config.weight_limit} request weight per 1 MINUTE."}
            return self._answer(request, params, weight, 429, body, {"Retry-After": str(retry)})
        try:
            status, body = route[1](self._rest, params)
        except ApiError as exc:
            status, body = exc.status, exc.body()
        except ResponseFault as late:  # an order desk's fault: a late answer, or none (logged as status 0)
            await asyncio.sleep(late.delay_s)
            status, body = late.status, late.body
            if late.drop and request.transport is not None:
                request.transport.abort()
                status = 0
        return self._answer(request, params, weight, status, body)

    def _add_weight(self, weight: int) -> int:
        minute = self.clock.now_ms() // 60_000
        self._weights[minute] = self._weights.get(minute, 0) + weight
        return self._weights[minute]

    def _answer(self, request: web.Request, params: dict[str, str], weight: int, status: int, body: Any,
                headers: dict[str, str] | None = None) -> web.Response:
        self.requests.append(RequestRecord(request.method, request.path, params, status, weight, self.clock.now_ms()))
        all_headers = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight()), **(headers or {})}
        return web.json_response(body, status=status, headers=all_headers)

    # ---- websocket -----------------------------------------------------------------------------

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        combined = request.path == "/stream"
        names = request.query.get("streams", "").split("/") if combined else [request.match_info.get("stream", "")]
        ws = web.WebSocketResponse(autoping=False, autoclose=True)
        await ws.prepare(request)
        index = self.connections
        self.connections += 1
        conn = _Connection(self, ws, request, index, combined)
        for name in filter(None, names):
            conn.subscribe(name)
        self._live.add(conn)
        try:
            reason = await conn.run()
        finally:
            self._live.discard(conn)
        self.closed_reasons.append(reason)
        return ws


def _fault_message(status: int) -> str:
    if status == 429:
        return "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."
    if status == 418:
        return "Way too much request weight used; IP banned until 1700000000000."
    if status >= 500:
        return "Server is currently overloaded with other requests. Please try again in a few minutes."
    return "Fault injected by the test."


@dataclass
class _Stream:
    """One subscribed stream and how far it has been sent."""

    name: str
    data: SymbolData
    agg: bool
    cursor: int


@dataclass
class _Connection:
    """One websocket client: sender, reader and housekeeping loops, and the faults of this connection."""

    fake: FakeBinance
    ws: web.WebSocketResponse
    request: web.Request
    index: int
    combined: bool
    streams: dict[str, _Stream] = field(default_factory=dict)
    sent: int = 0
    stalled_until: float = 0.0
    outstanding_ping: float | None = None
    incoming: list[float] = field(default_factory=list)
    reason: str = ""

    def __post_init__(self) -> None:
        self.faults: StreamFaults = self.fake.faults.for_connection(self.index)
        self.rng: random.Random = self.fake.faults.rng(self.index)
        self.opened = time.monotonic()

    def __hash__(self) -> int:
        return id(self)

    def subscribe(self, name: str) -> None:
        symbol, _, kind = name.partition("@")
        data = self.fake.data.get(symbol.upper())
        if data is None or kind not in ("trade", "aggTrade") or name in self.streams:
            return
        now = self.fake.clock.now_ms()
        cursor = data.agg_happened(now) if kind == "aggTrade" else data.raw_happened(now)
        self.streams[name] = _Stream(name, data, kind == "aggTrade", cursor)

    def abort(self, reason: str) -> None:
        self.reason = self.reason or reason
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def run(self) -> str:
        tasks = [asyncio.create_task(loop()) for loop in (self._send_loop, self._read_loop, self._housekeeping)]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 1.0)
        return self.reason or "closed"

    # -- sending

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed and not self.reason:
                for text in self._shuffle(self._due_messages()):
                    if not await self._send_one(text):
                        return
                await asyncio.sleep(self.fake.config.tick_s)

    def _due_messages(self) -> list[str]:
        now = self.fake.clock.now_ms()
        due: list[tuple[int, str]] = []
        for stream in self.streams.values():
            end = stream.data.agg_happened(now) if stream.agg else stream.data.raw_happened(now)
            rows = stream.data.agg if stream.agg else stream.data.raw
            due.extend((r.time, self._wrap(stream.name, _payload(stream.data.symbol, r)))
                       for r in rows[stream.cursor:end])
            stream.cursor = end
        due.sort(key=lambda item: item[0])
        return [text for _, text in due]

    def _wrap(self, name: str, payload: str) -> str:
        return f'{{"stream":"{name}","data":{payload}}}' if self.combined else payload

    def _shuffle(self, texts: list[str]) -> list[str]:
        window = self.faults.reorder_window
        if window < 2:
            return texts
        out: list[str] = []
        for i in range(0, len(texts), window):
            chunk = texts[i:i + window]
            self.rng.shuffle(chunk)
            out.extend(chunk)
        return out

    async def _send_one(self, text: str) -> bool:
        """Send a trade message and apply the faults due after it; False when the connection ends."""
        f = self.faults
        if self.sent + 1 in f.poisoned:
            await self.ws.send_str(_with_price(text, f.poisoned[self.sent + 1]))
        if self.sent + 1 not in f.lose:
            await self.ws.send_str(text)
        if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
            await self.ws.send_str(text)
        self.sent += 1
        if self.sent in f.malformed:
            await self.ws.send_str(MALFORMED_FRAMES[f.malformed[self.sent]])
        if self.sent == f.stall_after:
            self.stalled_until = time.monotonic() + f.stall_s
            await asyncio.sleep(f.stall_s)
        return await self._end_faults()

    async def _end_faults(self) -> bool:
        f = self.faults
        if self.sent == f.drop_after:
            self.abort(f"dropped after {self.sent} messages")
            return False
        if self.sent == f.close_after:
            self.reason = f"closed after {self.sent} messages"
            return False
        if self.sent == f.shutdown_after:
            now = self.fake.clock.now_ms()
            await self.ws.send_str(self._wrap("!serverShutdown", f'{{"e":"serverShutdown","E":{now}}}'))
            self.reason = "serverShutdown"
            return False
        return True

    # -- reading

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if self._over_rate():
                self.reason = "too many incoming messages"
                return
            if msg.type == WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG and not self.faults.ignore_pongs:
                self.outstanding_ping = None
            elif msg.type == WSMsgType.TEXT:
                await self.ws.send_str(json.dumps(self._control(msg.data)))
        self.reason = self.reason or "client closed"

    def _over_rate(self) -> bool:
        now = time.monotonic()
        self.incoming = [t for t in self.incoming if now - t < 1.0] + [now]
        return len(self.incoming) > self.fake.config.max_incoming_per_s

    def _control(self, text: str) -> dict[str, Any]:
        try:
            request = json.loads(text)
        except json.JSONDecodeError:
            return {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}
        if not isinstance(request, dict) or "method" not in request:
            return {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 1"}
        ident, params = request.get("id"), request.get("params") or []
        method = request["method"]
        if method == "SUBSCRIBE":
            for name in params:
                self.subscribe(str(name))
            return {"result": None, "id": ident}
        if method == "UNSUBSCRIBE":
            for name in params:
                self.streams.pop(str(name), None)
            return {"result": None, "id": ident}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(self.streams), "id": ident}
        return self._property(method, params, ident)

    def _property(self, method: str, params: list[Any], ident: Any) -> dict[str, Any]:
        if method == "GET_PROPERTY":
            if params[:1] != ["combined"]:
                return {"code": 0, "msg": "Unknown property", "id": ident}
            return {"result": self.combined, "id": ident}
        if method == "SET_PROPERTY":
            if params[:1] != ["combined"]:
                return {"code": 0, "msg": "Unknown property", "id": ident}
            if len(params) < 2 or not isinstance(params[1], bool):
                return {"code": 1, "msg": "Invalid value type: expected Boolean"}
            self.combined = params[1]
            return {"result": None, "id": ident}
        return {"code": 2, "msg": f"Invalid request: unknown variant {method}, expected one of `SUBSCRIBE`, "
                                  "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"}

    # -- pings, pong timeout, 24 h cut

    async def _housekeeping(self) -> None:
        cfg = self.fake.config
        next_ping = time.monotonic() + cfg.ping_interval_s
        while not self.ws.closed and not self.reason:
            await asyncio.sleep(min(0.02, cfg.ping_interval_s / 4))
            now = time.monotonic()
            if now < self.stalled_until:
                continue
            if now >= next_ping:
                next_ping = now + cfg.ping_interval_s
                await self.ws.ping(str(int(now * 1000)).encode())
                self.outstanding_ping = self.outstanding_ping or now
            if self.outstanding_ping is not None and now - self.outstanding_ping > cfg.pong_timeout_s:
                self.reason = "pong timeout"
            elif now - self.opened > cfg.connection_lifetime_s:
                self.reason = "24h cut"


def _payload(symbol: str, row: RawTrade | AggTrade) -> str:
    m = "true" if row.is_buyer_maker else "false"
    if isinstance(row, AggTrade):
        return (f'{{"e":"aggTrade","E":{row.time},"s":"{symbol}","a":{row.agg_id},"p":"{row.price}",'
                f'"q":"{row.qty}","f":{row.first_id},"l":{row.last_id},"T":{row.time},"m":{m},"M":true}}')
    return (f'{{"e":"trade","E":{row.time},"s":"{symbol}","t":{row.id},"p":"{row.price}","q":"{row.qty}",'
            f'"T":{row.time},"m":{m},"M":true}}')


def _with_price(text: str, price: str) -> str:
    """A trade message with its price replaced (same trade id)."""
    return re.sub(r'"p":"[^"]*"', f'"p":"{price}"', text, count=1)


@contextlib.contextmanager
def run_in_thread(fake: FakeBinance, port: int = 0) -> Iterator[FakeBinance]:
    """Serve ``fake`` from its own event loop in a daemon thread (for synchronous fixtures)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-binance", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(port), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake Binance replaying recorded trades.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", type=Path, nargs="*", default=None, help="trade CSVs or ws logs (.gz)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--start-ms", type=int, default=None)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--pong-timeout", type=float, default=60.0)
    parser.add_argument("--lifetime", type=float, default=24 * 3600.0, help="seconds before the '24h' cut")
    parser.add_argument("--shared-data", type=Path, default=None)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    config = FakeConfig(speed=args.speed, start_ms=args.start_ms, ping_interval_s=args.ping_interval,
                        pong_timeout_s=args.pong_timeout, connection_lifetime_s=args.lifetime,
                        shared_data=args.shared_data)
    fake = await FakeBinance(args.data, config=config).start(args.port)
    print(f"PORT {fake.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the fake until killed."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
