"""Real orders on Binance spot (testnet or live): signed REST, idempotent ids, reconciliation.

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

Client order ids are deterministic (:func:`client_order_id`: symbol, bar open time and leg) and the
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
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import msgspec

from dope.clock import Clock
from dope.config import ConfigError
from dope.trading.broker import OrderSlot
from dope.trading.journal import BaselineRecord, FillRecord, IntentRecord, OrderRecord, Record, SymbolHistory
from dope.trading.orders import Fill
from dope.trading.portfolio import Portfolio

log = logging.getLogger("dope.trader.binance")

ORDER_PATH = "/api/v3/order"
DUPLICATE = "Duplicate order sent."
UNKNOWN_STATUS = (-1007, -1006)
OUTCOME_UNKNOWN = "order outcome unknown: "
DEFAULT_BAN_S = 120.0
"""The shortest Binance IP ban (2 minutes), assumed when a 418 has no ``Retry-After``."""
_NO_FILLS: tuple[Fill, ...] = ()


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


def client_order_id(symbol: str, open_time: int, leg: str) -> str:
    """The order id of one leg (``open``, ``close``, ``kill``) of the decision at bar ``open_time``.

    Deterministic, so resending a decision after a restart is refused as a duplicate; at most
    36 characters of ``[A-Za-z0-9_-]`` as Binance requires.

    >>> client_order_id("BTCUSDT", 1723161240000, "open")
    'dope-BTCUSDT-1723161240000-open'
    """
    text = f"dope-{symbol}-{open_time}-{leg}"
    if len(text) <= 36:
        return text
    return "dope-" + hashlib.sha256(text.encode()).hexdigest()[:31]


def check_signed_url(url: str) -> None:
    """ConfigError unless ``url`` is ``https``, or ``http`` to a loopback host (a local fake exchange).

    >>> check_signed_url("https://api.binance.com"); check_signed_url("http://127.0.0.1:8080")
    >>> check_signed_url("http://api.binance.com")
    Traceback (most recent call last):
    ...
    dope.config.ConfigError: Binance orders need https (or a loopback host), not http://api.binance.com
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


# ---- exchange filters -------------------------------------------------------------------------

@dataclass(frozen=True)
class SymbolFilters:
    """The ``LOT_SIZE``, ``PRICE_FILTER`` and ``(MIN_)NOTIONAL`` rules of one symbol (0 = rule off)."""

    symbol: str
    base_asset: str
    quote_asset: str
    step: Decimal = Decimal(0)
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal = Decimal(0)
    tick: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)
    max_notional: Decimal = Decimal(0)

    @classmethod
    def from_exchange_info(cls, entry: Mapping[str, Any]) -> SymbolFilters:
        """Read one ``exchangeInfo.symbols[]`` entry."""
        values: dict[str, Decimal] = {}
        for f in entry.get("filters", []):
            kind = f.get("filterType")
            if kind == "LOT_SIZE":
                values.update(step=Decimal(f["stepSize"]), min_qty=Decimal(f["minQty"]), max_qty=Decimal(f["maxQty"]))
            elif kind == "PRICE_FILTER":
                values["tick"] = Decimal(f["tickSize"])
            elif kind in ("NOTIONAL", "MIN_NOTIONAL"):
                values["min_notional"] = Decimal(f.get("minNotional", "0"))
                values["max_notional"] = Decimal(f.get("maxNotional", "0"))
        return cls(entry["symbol"], entry["baseAsset"], entry["quoteAsset"], **values)

    def quantity(self, qty: float) -> Decimal:
        """``qty`` rounded down to the lot step (and to ``max_qty``)."""
        amount = Decimal(repr(max(qty, 0.0)))
        if self.step > 0:
            amount = (amount / self.step).to_integral_value(ROUND_DOWN) * self.step
        if self.max_qty > 0:
            amount = min(amount, self.max_qty)
        return amount.normalize() if amount else Decimal(0)

    def problem(self, qty: Decimal, price: float) -> str | None:
        """Why an order of ``qty`` at about ``price`` would fail a filter (None: it passes)."""
        if qty <= 0 or qty < self.min_qty:
            return f"LOT_SIZE: quantity {qty} below the minimum {self.min_qty}"
        notional = qty * Decimal(repr(price))
        if self.min_notional > 0 and notional < self.min_notional:
            return f"NOTIONAL: {notional:.8f} below the minimum {self.min_notional}"
        if self.max_notional > 0 and notional > self.max_notional:
            return f"NOTIONAL: {notional:.8f} above the maximum {self.max_notional}"
        return None


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


# ---- the signed REST client -----------------------------------------------------------------

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


# ---- the broker -------------------------------------------------------------------------------

JournalHook = Callable[[Record], None]
"""Where the broker writes its ``intent`` (before sending), ``fill`` and ``order`` records."""


class BinanceBroker(OrderSlot):
    """Market orders on Binance for the core :class:`~dope.trading.Trader` of one symbol (long/flat).

    :meth:`submit` only records the target (the core decides synchronously); the live trader
    then awaits :meth:`execute`, which sends the legs (close, then open) at once and books their
    fills in the portfolio. :meth:`on_open` has nothing to fill: orders never wait for a bar.
    """

    def __init__(self, client: BinanceOrderClient, filters: SymbolFilters, portfolio: Portfolio, *,
                 fee_rate: float = 0.001, fraction: float = 1.0, journal: JournalHook | None = None,
                 known_orders: set[str] | None = None, max_order_age_ms: int = 0) -> None:
        super().__init__()
        self.client = client
        self.max_order_age_ms = max_order_age_ms
        """An order not sent within this of the decision (client clock) is dropped; 0 = no limit."""
        self.problem: str | None = None
        """Why the last :meth:`execute` sent less than it should (an order dropped, or its outcome unknown)."""
        self.filters = filters
        self.portfolio = portfolio
        self.fee_rate = fee_rate
        self.fraction = fraction
        self.journal: JournalHook = journal or (lambda record: None)
        self.known_orders = known_orders if known_orders is not None else set()
        self.dust = 0.0
        self.last_ids: list[str] = []
        """Client order ids of the fills the last :meth:`execute` returned, in order."""

    def __repr__(self) -> str:
        return f"BinanceBroker({self.filters.symbol}, client={self.client!r})"

    def on_open(self, time_ms: int, open_price: float) -> tuple[Fill, ...]:
        return _NO_FILLS

    async def execute(self, open_time: int, price: float, leg: str = "") -> tuple[Fill, ...]:
        """Send the waiting order's legs now (``price``: the latest price, for sizing); their fills."""
        order, self._pending = self._pending, None
        self.last_ids, self.problem = [], None
        if order is None:
            return _NO_FILLS
        age = self.max_order_age_ms
        deadline = self.client.clock.now_ms() + age if age > 0 else None
        fills: list[Fill] = []
        pf = self.portfolio
        if pf.direction not in (0, order.target):
            fills += await self._leg(order.symbol, "SELL", Decimal(repr(abs(pf.qty))), open_time, leg or "close",
                                     price, deadline)
        if order.target == 1 and pf.direction == 0 and pf.cash > 0 and self.problem is None:
            qty = self.filters.quantity(self.fraction * pf.cash / (1.0 + self.fee_rate) / price)
            fills += await self._leg(order.symbol, "BUY", qty, open_time, leg or "open", price, deadline)
        return tuple(fills)

    async def _leg(self, symbol: str, side: str, qty: Decimal, open_time: int, leg: str,
                   price: float, deadline_ms: int | None) -> list[Fill]:
        cid = client_order_id(symbol, open_time, leg)
        if cid in self.known_orders:
            log.warning("%s: order %s is already in the journal; not sending it again", symbol, cid)
            return []
        if side == "SELL":
            qty = self.filters.quantity(float(qty))
        problem = self.filters.problem(qty, price)
        if problem is not None:
            return self._skip(symbol, cid, problem)
        self.known_orders.add(cid)
        self.journal(IntentRecord(symbol=symbol, client_order_id=cid, side=side, qty=format(qty, "f"),
                                  open_time=open_time, time_ms=self.client.clock.now_ms()))
        try:
            report = await self.client.market_order(symbol, side, qty, cid, deadline_ms=deadline_ms)
        except (OrderRejected, OrderDropped) as exc:
            status = "REJECTED" if isinstance(exc, OrderRejected) else "DROPPED"
            self.journal(OrderRecord(symbol=symbol, client_order_id=cid, status=status, reason=str(exc)))
            log.error("%s: order %s %s: %s", symbol, cid, status.lower(), exc)
            if isinstance(exc, OrderDropped):
                self.problem = f"order dropped: {exc}"
            return []
        except OrderUnknown as exc:
            log.error("%s: %s; left to the reconciliation, never resent", symbol, exc)
            self.problem = f"{OUTCOME_UNKNOWN}{exc}"
            return []
        return self.book(report, side)

    def _skip(self, symbol: str, cid: str, problem: str) -> list[Fill]:
        self.client._count("orders_skipped_filters")
        log.warning("%s: not sending %s: %s", symbol, cid, problem)
        return []

    def book(self, report: OrderReport, side: str | None = None) -> list[Fill]:
        """Turn an exchange order into a core fill, book it in the portfolio and journal it."""
        side = side or report.side
        executed = float(report.executedQty)
        if executed <= 0:
            self.journal(OrderRecord(symbol=report.symbol, client_order_id=report.clientOrderId,
                                     status=report.status, reason="nothing executed"))
            return []
        unfilled = _unfilled(report)
        fill, dust = self._to_fill(report, side, executed, partial=unfilled > 0)
        self.portfolio.apply_fill(fill)
        self.dust += dust
        self.journal(FillRecord(symbol=report.symbol, client_order_id=report.clientOrderId, fill=fill, dust=dust,
                                fee_asset=self.filters.quote_asset, unfilled=format(unfilled, "f") if unfilled else ""))
        if unfilled:
            self.client._count("orders_partial")
            log.warning("%s: order %s %s with %s of %s executed: booked as a partial fill, %s not executed",
                        report.symbol, report.clientOrderId, report.status, report.executedQty, report.origQty,
                        format(unfilled, "f"))
        self.last_ids.append(report.clientOrderId)
        return [fill]

    def _to_fill(self, report: OrderReport, side: str, executed: float, *, partial: bool) -> tuple[Fill, float]:
        """The core fill of ``report``; a close sells the whole position (the rest is dust) unless ``partial``."""
        quote = float(report.cummulativeQuoteQty)
        price = quote / executed
        base_fee, quote_fee = self._commissions(report, side, executed)
        time_ms = report.transactTime or report.time
        if side == "BUY":
            net = executed - base_fee
            fee = base_fee * price + quote_fee
            value = quote - base_fee * price
            return Fill(symbol=report.symbol, time_ms=time_ms, side=1, qty=net, price=price, value=value, fee=fee), 0.0
        held = abs(self.portfolio.qty)
        sold = min(executed, held) if partial else held
        return Fill(symbol=report.symbol, time_ms=time_ms, side=-1, qty=sold, price=price, value=quote,
                    fee=quote_fee + base_fee * price), 0.0 if partial else max(held - executed, 0.0)

    def _commissions(self, report: OrderReport, side: str, executed: float) -> tuple[float, float]:
        """(base, quote) commissions; estimated at ``fee_rate`` when the report lists no fills (a query)."""
        if report.fills is None:
            quote = float(report.cummulativeQuoteQty)
            return (executed * self.fee_rate, 0.0) if side == "BUY" else (0.0, quote * self.fee_rate)
        base = sum(float(f.commission) for f in report.fills if f.commissionAsset == self.filters.base_asset)
        quote = sum(float(f.commission) for f in report.fills if f.commissionAsset == self.filters.quote_asset)
        return base, quote


def _unfilled(report: OrderReport) -> Decimal:
    """What an order that ended without filling whole (``EXPIRED``, ``CANCELED``...) left unexecuted."""
    ordered, executed = Decimal(report.origQty), Decimal(report.executedQty)
    if report.status in ("NEW", "PARTIALLY_FILLED", "FILLED") or ordered <= executed:
        return Decimal(0)
    return (ordered - executed).normalize()


# ---- restart: reconciliation ------------------------------------------------------------------

async def reconcile(broker: BinanceBroker, history: SymbolHistory | None) -> list[str]:
    """After a (re)start: settle the journal's unresolved orders, then check open orders and balances.

    An ``intent`` without an outcome is looked up by its client order id (:meth:`~BinanceOrderClient.find_order`,
    so until it could no longer appear): found, its fill is booked (the commission estimated at
    ``fee_rate`` when the exchange does not list it); not found, it never reached the exchange and
    is closed as ``MISSING`` (never resent: the decision is old). :class:`OrderUnknown` when the
    exchange cannot tell. Returns the problems found (an unexpected open order, a balance that does not match
    the journal), which the trader treats as a reason to stop entering positions.
    """
    client, symbol = broker.client, broker.filters.symbol
    for cid, intent in sorted((history.open_intents if history else {}).items()):
        report = await client.find_order(symbol, cid, intent.time_ms)
        if report is None:
            client._count("orders_missing_after_restart")
            broker.journal(OrderRecord(symbol=symbol, client_order_id=cid, status="MISSING",
                                       reason="not on the exchange after a restart"))
        else:
            client._count("orders_recovered_after_restart")
            broker.book(report, intent.side)
        log.warning("%s: order %s from before the restart: %s", symbol, cid,
                    "recovered" if report is not None else "never reached the exchange")
    problems = [f"unexpected open order {o.clientOrderId}" for o in await client.open_orders(symbol)
                if o.clientOrderId.startswith("dope-")]
    return problems + await _check_balance(broker, history)


async def _check_balance(broker: BinanceBroker, history: SymbolHistory | None) -> list[str]:
    asset = broker.filters.base_asset
    actual = (await broker.client.account()).get(asset, 0.0)
    held = broker.portfolio.qty + broker.dust + (history.dust if history else 0.0)
    baseline = history.baseline if history else None
    if baseline is None:
        broker.journal(BaselineRecord(symbol=broker.filters.symbol, asset=asset, amount=actual - held))
        return []
    expected = baseline.amount + held
    tolerance = max(float(broker.filters.step), 1e-8) * 2
    if abs(actual - expected) > tolerance:
        return [f"{asset} balance {actual:.8f} differs from the journal's {expected:.8f}"]
    return []
