"""The signed REST client for orders on Binance spot (testnet or live).

Follows ``shared/binance-protocol.md`` §3.5-3.6. Every request is signed with HMAC-SHA256 of
its query string (all parameters travel in the query string, the body stays empty), carries
``timestamp`` (the local clock plus the offset measured against ``/api/v3/time``) and
``recvWindow``. Errors, by what they mean for an order:

* ``-1021`` (timestamp outside recvWindow): resynchronise with ``/api/v3/time`` and resend;
* HTTP 429: pause every request for ``Retry-After`` seconds (without one: 1, 2, 4 ... s, at most 60);
* HTTP 418 (IP ban): send nothing until the ban ends (:class:`IpBanned`); the order is dropped;
* HTTP 5xx, ``-1007``, a network error or a timeout: the order's fate is *unknown* - ask
  ``GET /api/v3/order`` by client order id until it is found or can no longer appear
  (``recvWindow`` + a margin after sending), and resend only then (:meth:`_settle_unknown`);
* ``-2010 Duplicate order sent.``: the order exists already (and is open) - fetch it and use it;
* anything else (``-2010`` rejections, ``-1013`` filter failures...): :class:`OrderRejected`.

An order is never sent past its deadline (``max_order_age_ms`` after the decision): :class:`OrderDropped`.
Signed requests need ``https`` unless the host is loopback (:func:`check_signed_url`).

Client order ids are deterministic (:func:`dope.trading.binance.client_order_id`: symbol, bar
open time and leg) and the
trader never sends an id its journal knows. Binance refuses a reused id only among *open* orders,
so a filled order's id does not protect against a resend: the rules above do.

The API key and secret come from the environment (:meth:`Credentials.from_env`), are never
logged nor written anywhere, and are redacted from reprs and error messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import aiohttp
import msgspec

from dope.clock import Clock
from dope.errors import ConfigError
from dope.trading.binance.filters import SymbolFilters

log = logging.getLogger("dope.trader.binance")

ORDER_PATH = "/api/v3/order"
DUPLICATE = "Duplicate order sent."
UNKNOWN_STATUS = (-1007, -1006)
DEFAULT_BAN_S = 120.0
"""The shortest Binance IP ban (2 minutes), assumed when a 418 has no ``Retry-After``."""


class Credentials:
    """An API key pair; ``repr``/``str`` never show it.

    >>> Credentials("my-key", "my-secret")
    Credentials(api_key='***', secret='***')
    """

    __slots__ = ("api_key", "secret")

    def __init__(self, api_key: str, secret: str) -> None:
        if not api_key or not secret:
            raise ConfigError("Binance credentials: both the API key and the secret are needed")
        self.api_key = api_key
        self.secret = secret

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read ``BINANCE_API_KEY`` and ``BINANCE_API_SECRET``; the error names what is missing, never a value."""
        env = os.environ if environ is None else environ
        missing = [name for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET") if not env.get(name)]
        if missing:
            raise ConfigError(f"the Binance broker needs {' and '.join(missing)} in the environment")
        return cls(env["BINANCE_API_KEY"], env["BINANCE_API_SECRET"])

    def redact(self, text: str) -> str:
        """``text`` with the key and the secret replaced by ``***``."""
        return text.replace(self.secret, "***").replace(self.api_key, "***")

    def __repr__(self) -> str:
        return "Credentials(api_key='***', secret='***')"

    __str__ = __repr__


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` (query string + body) with ``secret`` (spec §3.5).

    >>> sign("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    ...      "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
    ...      "&timestamp=1499827319559")[:16]
    'c8db56825ae71d6d'
    """
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_signed_url(url: str) -> None:
    """ConfigError unless ``url`` is ``https``, or ``http`` to a loopback host (a local fake exchange).

    >>> check_signed_url("https://api.binance.com"); check_signed_url("http://127.0.0.1:8080")
    >>> check_signed_url("http://api.binance.com")
    Traceback (most recent call last):
    ...
    dope.errors.ConfigError: Binance orders need https (or a loopback host), not http://api.binance.com
    """
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
        return
    raise ConfigError(f"Binance orders need https (or a loopback host), not {url}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- wire types -------------------------------------------------------------------------------

class WireFill(msgspec.Struct):
    price: str
    qty: str
    commission: str = "0"
    commissionAsset: str = ""  # noqa: N815 - Binance's field names


class OrderReport(msgspec.Struct):
    """An order as ``POST``/``GET /api/v3/order`` answer it (the fields DOPE reads)."""

    symbol: str
    clientOrderId: str  # noqa: N815
    status: str = "NEW"
    side: str = ""
    origQty: str = "0"  # noqa: N815
    executedQty: str = "0"  # noqa: N815
    cummulativeQuoteQty: str = "0"  # noqa: N815
    transactTime: int = 0  # noqa: N815
    time: int = 0
    fills: list[WireFill] | None = None


class ErrorBody(msgspec.Struct):
    code: int
    msg: str


class BinanceOrderError(RuntimeError):
    """An order request failed for good (after the retries its error allows)."""

    def __init__(self, message: str, code: int | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class OrderRejected(BinanceOrderError):
    """The exchange refused the order (``-2010``, a filter failure...): nothing was executed."""


class OrderDropped(BinanceOrderError):
    """The order was not sent: it would have been older than its maximum age (a stale decision)."""


class IpBanned(OrderDropped):
    """Binance bans this IP (HTTP 418) until ``until_ms`` (client clock): nothing is sent before."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message, status=418)
        self.until_ms = until_ms


class OrderUnknown(BinanceOrderError):
    """The order may or may not have executed and the exchange could not tell: it is never resent.

    Its journal intent stays open; the reconciliation at the next start settles it.
    """


class _Unknown:
    """No clear answer to a query (``UNKNOWN``)."""


UNKNOWN = _Unknown()


@dataclass
class Response:
    """One HTTP answer: status, body, Binance's error (if any) and ``Retry-After``."""

    status: int
    body: bytes
    error: ErrorBody | None = None
    retry_after: float | None = None

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class BinanceOrderClient:
    """Signed requests to ``base_url`` with Binance's error rules; counts what happened in ``counters``."""

    session: aiohttp.ClientSession
    base_url: str
    credentials: Credentials
    clock: Clock
    recv_window_ms: int = 5_000
    timeout_ms: int = 10_000
    max_attempts: int = 6
    settle_margin_ms: int = 1_000
    """After an unknown outcome: how long beyond ``recv_window_ms`` an order may still appear."""
    unknown_give_up_ms: int = 60_000
    """After an unknown outcome: how long beyond that to keep asking before :class:`OrderUnknown`."""
    sleep: Sleep = asyncio.sleep
    counters: dict[str, int] = field(default_factory=dict)
    offset_ms: int = 0
    paused_until_ms: int = 0
    """No request before this (client clock): a 429's pause."""
    banned_until_ms: int = 0
    """Nothing sent before this (client clock): a 418's IP ban."""

    def __post_init__(self) -> None:
        check_signed_url(self.base_url)

    def __repr__(self) -> str:
        return f"BinanceOrderClient(base_url={self.base_url!r}, credentials={self.credentials!r})"

    async def sync_time(self) -> int:
        """Measure the offset of the exchange clock (``/api/v3/time``) from ours; returns it."""
        before = self.clock.now_ms()
        resp = await self._send("GET", "/api/v3/time", {}, signed=False)
        after = self.clock.now_ms()
        if resp.status != 200:
            raise BinanceOrderError(f"GET /api/v3/time answered HTTP {resp.status}", status=resp.status)
        server = msgspec.json.decode(resp.body)["serverTime"]
        self.offset_ms = int(server) - (before + after) // 2
        self._count("time_syncs")
        return self.offset_ms

    async def exchange_filters(self, symbol: str) -> SymbolFilters:
        """The trading filters of ``symbol`` from ``/api/v3/exchangeInfo``."""
        resp = await self.request("GET", "/api/v3/exchangeInfo", {"symbol": symbol}, signed=False)
        entries = msgspec.json.decode(resp.body)["symbols"]
        return SymbolFilters.from_exchange_info(entries[0])

    async def account(self) -> dict[str, float]:
        """Balances (free + locked) by asset, from ``GET /api/v3/account``."""
        resp = await self.request("GET", "/api/v3/account", {"omitZeroBalances": "true"})
        balances = msgspec.json.decode(resp.body).get("balances", [])
        return {b["asset"]: float(b["free"]) + float(b["locked"]) for b in balances}

    async def open_orders(self, symbol: str) -> list[OrderReport]:
        """``GET /api/v3/openOrders`` for ``symbol``."""
        resp = await self.request("GET", "/api/v3/openOrders", {"symbol": symbol})
        return msgspec.json.decode(resp.body, type=list[OrderReport])

    async def query_order(self, symbol: str, client_id: str) -> OrderReport | None:
        """The order with client id ``client_id``, or None when the exchange has none (``-2013``)."""
        resp = await self.request("GET", ORDER_PATH, {"symbol": symbol, "origClientOrderId": client_id},
                                  accept=(-2013,))
        if resp.error is not None:
            return None
        return msgspec.json.decode(resp.body, type=OrderReport)

    async def market_order(self, symbol: str, side: str, qty: Decimal, client_id: str, *,
                           deadline_ms: int | None = None) -> OrderReport:
        """Place a MARKET order at most once, whatever the network and the exchange do in between.

        ``deadline_ms`` (on :attr:`clock`): the order is never sent after it (:class:`OrderDropped`),
        nor when a rate-limit pause or an IP ban would end after it. After an unknown outcome the
        order is looked for (:meth:`_settle_unknown`) and resent only once it surely did not execute.
        """
        params = {"symbol": symbol, "side": side, "type": "MARKET", "quantity": format(qty, "f"),
                  "newClientOrderId": client_id, "newOrderRespType": "FULL"}
        for attempt in range(self.max_attempts):
            await self._wait_turn(deadline_ms, f"order {client_id}")
            sent_ms = self.clock.now_ms()
            resp = await self._attempt("POST", ORDER_PATH, params)
            if resp is None or _unknown(resp):
                existing = await self._settle_unknown(symbol, client_id, resp, sent_ms)
                if existing is not None:
                    return existing
            elif resp.status == 200:
                self._count("orders_sent")
                return msgspec.json.decode(resp.body, type=OrderReport)
            elif resp.error is not None and resp.error.msg == DUPLICATE:
                return await self._duplicate(symbol, client_id)
            elif not await self._retryable(resp, attempt):
                raise _rejection(ORDER_PATH, resp)
        raise BinanceOrderError(f"order {client_id}: no answer after {self.max_attempts} attempts")

    async def _settle_unknown(self, symbol: str, client_id: str, resp: Response | None,
                              sent_ms: int) -> OrderReport | None:
        """The order sent at ``sent_ms`` got no clear answer: :meth:`find_order` (never resent meanwhile)."""
        self._count("unknown_status")
        what = f"HTTP {resp.status}" if resp is not None else "no answer"
        log.warning("%s: order %s got %s: status unknown, asking the exchange (never resent while unknown)",
                    symbol, client_id, what)
        found = await self.find_order(symbol, client_id, sent_ms)
        self._count("orders_found_after_unknown" if found is not None else "orders_absent_after_unknown")
        if found is None:
            log.warning("%s: order %s never reached the matching engine; it may be sent again", symbol, client_id)
        return found

    async def find_order(self, symbol: str, client_id: str, sent_ms: int) -> OrderReport | None:
        """The order sent at ``sent_ms`` (client clock), or None once it surely never executed.

        Binance re-checks ``recvWindow`` before the matching engine takes an order, so once
        ``recv_window_ms + settle_margin_ms`` have passed since it was sent, an order still not
        found never will be. Until then it is asked for again and again, with backoff.
        :class:`OrderUnknown` when the exchange cannot be asked (errors, a ban) for
        ``unknown_give_up_ms`` beyond that.
        """
        settled_ms = sent_ms + self.recv_window_ms + self.settle_margin_ms
        for attempt in itertools.count():
            found = await self._look_up(symbol, client_id)
            now = self.clock.now_ms()
            if isinstance(found, OrderReport):
                return found
            if found is None and now >= settled_ms:
                return None
            if now >= settled_ms + self.unknown_give_up_ms or self.banned_until_ms > now:
                self._count("orders_unknown")
                raise OrderUnknown(f"order {client_id}: outcome still unknown {now - sent_ms} ms after sending it")
            pause_ms = max(self.paused_until_ms - now, 0)
            await self.sleep(max(_backoff_s(attempt), pause_ms / 1000))
        raise AssertionError("unreachable")

    async def _look_up(self, symbol: str, client_id: str) -> OrderReport | None | _Unknown:
        """One ``GET /api/v3/order`` by client id: the order, None (``-2013``), or UNKNOWN (no clear answer)."""
        if self.banned_until_ms > self.clock.now_ms():
            return UNKNOWN
        params = {"symbol": symbol, "origClientOrderId": client_id}
        resp = await self._attempt("GET", ORDER_PATH, params)
        if resp is None or _unknown(resp):
            return UNKNOWN
        if resp.status == 200:
            return msgspec.json.decode(resp.body, type=OrderReport)
        if resp.error is not None and resp.error.code == -2013:
            return None
        try:
            if await self._retryable(resp, 0):
                return UNKNOWN
        except IpBanned:
            return UNKNOWN
        raise _rejection(ORDER_PATH, resp)

    async def _duplicate(self, symbol: str, client_id: str) -> OrderReport:
        self._count("duplicates")
        log.warning("%s: order %s already exists (duplicate refused); using it", symbol, client_id)
        existing = await self.query_order(symbol, client_id)
        if existing is None:
            raise BinanceOrderError(f"order {client_id}: refused as a duplicate but not found")
        return existing

    async def request(self, method: str, path: str, params: Mapping[str, str], *, signed: bool = True,
                      accept: tuple[int, ...] = ()) -> Response:
        """A request that is safe to repeat, retried on -1021, 429, 5xx and network errors (not during a ban)."""
        for attempt in range(self.max_attempts):
            await self._wait_turn(None, f"{method} {path}")
            resp = await self._attempt(method, path, params, signed=signed)
            if resp is not None and (resp.status == 200 or (resp.error and resp.error.code in accept)):
                return resp
            if resp is None or _unknown(resp):
                self._count("server_errors" if resp is not None else "no_answer")
                await self.sleep(_backoff_s(attempt))
            elif not await self._retryable(resp, attempt):
                raise _rejection(path, resp)
        raise BinanceOrderError(f"{method} {path}: no answer after {self.max_attempts} attempts")

    async def _wait_turn(self, deadline_ms: int | None, what: str) -> None:
        """Wait out a rate-limit pause; IpBanned during a ban, OrderDropped when the wait ends past ``deadline_ms``."""
        now = self.clock.now_ms()
        if self.banned_until_ms > now:
            raise IpBanned(f"{what} not sent: Binance bans this IP for {(self.banned_until_ms - now) / 1000:.0f} s "
                           "more", self.banned_until_ms)
        resume = max(now, self.paused_until_ms)
        if deadline_ms is not None and resume > deadline_ms:
            self._count("orders_dropped_stale")
            raise OrderDropped(f"{what} not sent: it would be {resume - deadline_ms} ms past its maximum age")
        if resume > now:
            await self.sleep((resume - now) / 1000)

    async def _retryable(self, resp: Response, attempt: int) -> bool:
        """Do what the error asks (note a pause or a ban, resync the clock) and say whether to resend."""
        if resp.status == 418:
            self._ban(resp)
        if resp.status == 429:
            self._count("rate_limited")
            if resp.retry_after is not None:
                wait, why = resp.retry_after, "as its Retry-After asks"
            else:
                wait, why = _rate_backoff_s(attempt), "backing off by itself (no Retry-After)"
            self.paused_until_ms = max(self.paused_until_ms, self.clock.now_ms() + int(wait * 1000))
            log.warning("Binance answered 429 (rate limit): pausing requests %.1f s, %s", wait, why)
            return True
        if resp.error is not None and resp.error.code == -1021:
            self._count("timestamp_resyncs")
            log.warning("Binance: timestamp outside recvWindow (%s); resynchronising the clock", resp.error.msg)
            await self.sync_time()
            return True
        return False

    def _ban(self, resp: Response) -> None:
        """HTTP 418: this IP is banned; nothing is sent until the ban ends (raises IpBanned)."""
        self._count("ip_banned")
        wait_s = resp.retry_after if resp.retry_after is not None else DEFAULT_BAN_S
        self.banned_until_ms = max(self.banned_until_ms, self.clock.now_ms() + int(wait_s * 1000))
        source = "Retry-After" if resp.retry_after is not None else "no Retry-After: assumed"
        log.error("ALARM: Binance banned this IP (HTTP 418) for %.0f s (%s); trading stops until the ban ends",
                  wait_s, source)
        raise IpBanned(f"Binance banned this IP for {wait_s:.0f} s (HTTP 418)", self.banned_until_ms)

    async def _attempt(self, method: str, path: str, params: Mapping[str, str], *,
                       signed: bool = True) -> Response | None:
        """One request; None when it got no answer (network error, timeout)."""
        try:
            return await self._send(method, path, params, signed=signed)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count("network_errors")
            log.warning("Binance %s %s failed: %s", method, path, self.credentials.redact(type(exc).__name__))
            return None

    async def _send(self, method: str, path: str, params: Mapping[str, str], *, signed: bool) -> Response:
        query = urlencode(dict(params))
        headers: dict[str, str] = {}
        if signed:
            stamp = self.clock.now_ms() + self.offset_ms
            query = f"{query}&recvWindow={self.recv_window_ms}&timestamp={stamp}".lstrip("&")
            query = f"{query}&signature={sign(self.credentials.secret, query)}"
            headers["X-MBX-APIKEY"] = self.credentials.api_key
        url = f"{self.base_url.rstrip('/')}{path}?{query}"
        timeout = aiohttp.ClientTimeout(total=self.timeout_ms / 1000)
        async with self.session.request(method, url, headers=headers, timeout=timeout) as http:
            body = await http.read()
            retry = http.headers.get("Retry-After")
            return Response(http.status, body, _error(body) if http.status != 200 else None,
                            float(retry) if retry else None)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _unknown(resp: Response) -> bool:
    return resp.status >= 500 or (resp.error is not None and resp.error.code in UNKNOWN_STATUS)


def _error(body: bytes) -> ErrorBody | None:
    try:
        return msgspec.json.decode(body, type=ErrorBody)
    except msgspec.DecodeError:
        return None


def _rejection(path: str, resp: Response) -> OrderRejected:
    code, msg = (resp.error.code, resp.error.msg) if resp.error else (None, resp.body[:200].decode(errors="replace"))
    return OrderRejected(f"Binance {path} answered HTTP {resp.status} (code {code}): {msg}", code, resp.status)


def _backoff_s(attempt: int) -> float:
    return float(min(0.05 * 2 ** min(attempt, 7), 5.0))


def _rate_backoff_s(attempt: int) -> float:
    """The pause after a 429 without ``Retry-After``: 1, 2, 4 ... s, at most 60 s."""
    return float(min(2 ** min(attempt, 6), 60))
