"""Signed order endpoints of the fake Binance (spec §3.5-3.6): an order desk with balances and an order log.

``POST /api/v3/order`` (MARKET by ``quantity`` or ``quoteOrderQty``; LIMIT with ``GTC``/``IOC``/``FOK``;
``newOrderRespType`` ``ACK``/``RESULT``/``FULL``) and ``/api/v3/order/test``, ``GET /api/v3/order``,
``DELETE /api/v3/order`` (cancel), ``GET /api/v3/openOrders`` and ``/api/v3/account``. Every request
is checked as Binance checks it: ``X-MBX-APIKEY``, the HMAC-SHA256 signature of the query string +
body, ``timestamp`` (ms or µs) against the exchange clock and ``recvWindow``, the symbol's LOT_SIZE /
PRICE_FILTER / NOTIONAL filters and the free balances. With ``X-MBX-TIME-UNIT: MICROSECOND`` the
answers' times are in µs.

Matching: an order that can trade at once (MARKET, or a LIMIT at or through the last price) takes
up to ``liquidity`` base units (None: all) at the last trade price on the exchange clock; MARKET and
IOC orders expire with the rest (``EXPIRED``, maybe partly executed), FOK orders that cannot fill
whole expire with nothing done, GTC orders rest on the book and fill at their price against the
replayed trades that cross it as the exchange clock runs. Funds of a resting order are locked.
The commission (``commission_rate``) is charged in the asset received, as Binance does without BNB.

A ``newClientOrderId`` is refused with ``-2010 Duplicate order sent.`` only while an *open* order
has it (Binance's rule: the id of a filled or expired order may be used again). ``desk.orders`` is
the order log tests check; ``desk.inject(OrderFault(...))`` loses, delays or fails the next answer.

    fake = FakeBinance(...)
    desk = OrderDesk.install(fake, balances={"USDT": 10_000})
    desk.execute_then_fail(1)        # the next order executes but is answered HTTP 503
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.binance_faults import OrderFault, ResponseFault
from tests.fakes.binance_rest import ApiError, Params, RestContext, WeightFn

TEST_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
TEST_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
"""The key pair of the spec's example (§3.5): the fake accepts this one (or the one it is given)."""

OPEN = ("NEW", "PARTIALLY_FILLED")
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")
ZERO = Decimal(0)


class RequestParams(dict[str, str]):
    """Query (+ form body) parameters, with what signature checks need: the signed payload and the API key."""

    payload: str = ""
    signature: str = ""
    api_key: str | None = None
    time_unit: str = ""


async def read_params(request: web.Request) -> RequestParams:
    """Parameters of a REST request: query string and body merged (the query string wins, spec §3.1)."""
    body = await request.text() if request.can_read_body else ""
    params = RequestParams({**dict(parse_qsl(body, keep_blank_values=True)), **dict(request.query)})
    params.payload, params.signature = _signed_payload(request.query_string, body)
    params.api_key = request.headers.get("X-MBX-APIKEY")
    params.time_unit = request.headers.get("X-MBX-TIME-UNIT", "").upper()
    return params


def _signed_payload(query: str, body: str) -> tuple[str, str]:
    """(query string + body without the ``signature`` parameter, the signature sent)."""
    signature = ""
    kept: list[str] = []
    for part in (query, body):
        pieces = [p for p in part.split("&") if p]
        for piece in pieces:
            if piece.startswith("signature="):
                signature = piece.partition("=")[2]
        kept.append("&".join(p for p in pieces if not p.startswith("signature=")))
    return "".join(kept), signature


@dataclass
class FakeOrder:
    """One order the desk accepted, and what it executed so far."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    """The limit price (0 for MARKET)."""
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    seen: int
    """Replayed trades already matched against (a resting order fills on later ones)."""
    status: str = "NEW"
    executed: Decimal = ZERO
    quote: Decimal = ZERO
    locked: Decimal = ZERO
    update_ms: int = 0
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    @property
    def qty(self) -> Decimal:
        """What executed (base units)."""
        return self.executed

    @property
    def commission(self) -> Decimal:
        return sum((Decimal(f["commission"]) for f in self.fills), ZERO)

    def report(self, resp_type: str, scale: int = 1) -> dict[str, Any]:
        """The ``POST /api/v3/order`` answer of type ACK, RESULT or FULL (times x ``scale``: 1000 = µs)."""
        body: dict[str, Any] = {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                                "clientOrderId": self.client_order_id, "transactTime": self.time_ms * scale}
        if resp_type == "ACK":
            return body
        body.update(self._state(scale))
        if resp_type == "FULL":
            body["fills"] = list(self.fills)
        return body

    def _state(self, scale: int) -> dict[str, Any]:
        return {"price": _dec(self.price), "origQty": _dec(self.orig_qty), "executedQty": _dec(self.executed),
                "origQuoteOrderQty": _dec(self.orig_quote_qty), "cummulativeQuoteQty": _dec(self.quote),
                "status": self.status, "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
                "workingTime": self.time_ms * scale, "selfTradePreventionMode": "NONE"}

    def as_queried(self, scale: int = 1) -> dict[str, Any]:
        """The ``GET /api/v3/order`` (and ``openOrders``) form."""
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_order_id, **self._state(scale), "stopPrice": "0.00000000",
                "icebergQty": "0.00000000", "time": self.time_ms * scale,
                "updateTime": (self.update_ms or self.time_ms) * scale, "isWorking": True}


@dataclass
class OrderDesk:
    """The fake's account: free and locked balances, accepted orders, and the faults of the order endpoints."""

    ctx: RestContext
    api_key: str = TEST_API_KEY
    secret: str = TEST_SECRET
    balances: dict[str, Decimal] = field(default_factory=dict)
    """Free balances."""
    commission_rate: Decimal = Decimal("0.001")
    orders: list[FakeOrder] = field(default_factory=list)
    attempts: list[dict[str, str]] = field(default_factory=list)
    locked: dict[str, Decimal] = field(default_factory=dict)
    liquidity: Decimal | None = None
    """Base units an order can take at once at the last price (None: unlimited)."""
    faults: deque[OrderFault] = field(default_factory=deque)
    late: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    @classmethod
    def install(cls, fake: Any, *, balances: dict[str, float] | None = None, api_key: str = TEST_API_KEY,
                secret: str = TEST_SECRET, min_notional: str = "5") -> OrderDesk:
        """Create a desk for ``fake`` (a ``FakeBinance``) and add its routes to ``fake.routes``."""
        desk = cls(fake._rest, api_key, secret, {k: Decimal(repr(v)) for k, v in (balances or {}).items()})
        desk._add_notional(min_notional)
        fake.routes.update(desk.routes())
        return desk

    def routes(self) -> dict[tuple[str, str], tuple[WeightFn, Any]]:
        def const(weight: int) -> WeightFn:
            return lambda params: weight
        return {("POST", "/api/v3/order"): (const(1), self.new_order),
                ("POST", "/api/v3/order/test"): (const(1), self.test_order),
                ("GET", "/api/v3/order"): (const(4), self.get_order),
                ("DELETE", "/api/v3/order"): (const(1), self.cancel_order),
                ("GET", "/api/v3/openOrders"): (lambda p: 6 if "symbol" in p else 80, self.open_orders),
                ("GET", "/api/v3/account"): (const(20), self.account)}

    def inject(self, *faults: OrderFault) -> None:
        """The next accepted orders meet these faults, in order."""
        self.faults.extend(faults)

    def execute_then_fail(self, count: int = 1) -> None:
        """The next ``count`` orders execute but are answered HTTP 503 (the client cannot know)."""
        self.inject(*[OrderFault("error", 503, -1008)] * count)

    def _add_notional(self, min_notional: str) -> None:
        for entry in self.ctx.exchange_info["symbols"]:
            kinds = {f["filterType"] for f in entry.get("filters", [])}
            if not kinds & {"NOTIONAL", "MIN_NOTIONAL"}:
                entry.setdefault("filters", []).append({"filterType": "NOTIONAL", "minNotional": min_notional,
                                                        "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                                                        "applyMaxToMarket": False, "avgPriceMins": 5})

    def client_ids(self) -> list[str]:
        """Client order ids of the accepted orders, in order (the order log)."""
        return [o.client_order_id for o in self.orders]

    # ---- checks ---------------------------------------------------------------------------------

    def authenticate(self, params: Params) -> None:
        """API key, signature and timing, as §3.5 says; ApiError otherwise. Then the book catches up."""
        key = getattr(params, "api_key", None)
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        expected = hmac.new(self.secret.encode(), getattr(params, "payload", "").encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, getattr(params, "signature", "").lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        self._check_time(params)
        self.catch_up()

    def _check_time(self, params: Params) -> None:
        """``timestamp`` in ms, or in µs (16 digits); ``recvWindow`` in ms."""
        stamp = _int(params, "timestamp")
        unit = 1000 if stamp >= 10**15 else 1
        window = Decimal(params.get("recvWindow", "5000"))
        if window > 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = self.ctx.now_ms() * unit
        if stamp >= now + 1000 * unit:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - stamp > window * unit:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _entry(self, params: Params) -> dict[str, Any]:
        name = params.get("symbol", "")
        if not name:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        for entry in self.ctx.exchange_info["symbols"]:
            if entry["symbol"] == name:
                return dict(entry)
        raise ApiError(400, -1121, "Invalid symbol.")

    def last_price(self, symbol: str) -> Decimal:
        """The price of the last trade that happened on the exchange clock (the first one before any)."""
        data = self.ctx.data.get(symbol)
        if data is None:
            raise ApiError(400, -2010, "Market is closed.")
        happened = data.raw_happened(self.ctx.now_ms())
        return Decimal(data.raw[max(happened - 1, 0)].price)

    # ---- endpoints ------------------------------------------------------------------------------

    def test_order(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        self._validate(params)
        return 200, {}

    def new_order(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.attempts.append(dict(params))
        self.authenticate(params)
        resp_type = params.get("newOrderRespType", "FULL" if params.get("type") in ("MARKET", "LIMIT") else "ACK")
        if resp_type not in RESPONSE_TYPES:
            raise ApiError(400, -1115, "Invalid newOrderRespType.")
        cid = params.get("newClientOrderId") or f"fake{len(self.orders) + 1}"
        if any(o.client_order_id == cid and o.is_open for o in self.orders):
            raise ApiError(400, -2010, "Duplicate order sent.")
        self._validate(params)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "late":
            self.late.append((self.ctx.now_ms() + fault.late_ms, {**params, "newClientOrderId": cid}))
            raise ApiError(503, -1007, "Timeout waiting for response from backend server. "
                                       "Send status unknown; execution status unknown.")
        order = self._place(params, cid)
        answer = order.report(resp_type, _scale(params))
        if fault is None:
            return 200, answer
        if fault.kind == "error":
            raise ApiError(fault.status, fault.code, "Server is currently overloaded with other requests.")
        raise ResponseFault(200, answer, delay_s=fault.delay_s, drop=fault.kind == "lose")

    def get_order(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        return 200, self._find(params).as_queried(_scale(params))

    def cancel_order(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        order = self._find(params)
        if not order.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        order.status, order.update_ms = "CANCELED", self.ctx.now_ms()
        self._unlock(order)
        scale = _scale(params)
        state = order.as_queried(scale)
        return 200, {"symbol": order.symbol, "origClientOrderId": order.client_order_id, "orderId": order.order_id,
                     "orderListId": -1, "clientOrderId": params.get("newClientOrderId") or f"cancel{order.order_id}",
                     "transactTime": order.update_ms * scale,
                     **{k: state[k] for k in ("price", "origQty", "executedQty", "origQuoteOrderQty",
                                              "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                                              "selfTradePreventionMode")}}

    def open_orders(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        symbol = params.get("symbol")
        if symbol is not None:
            self._entry(params)
        scale = _scale(params)
        return 200, [o.as_queried(scale) for o in self.orders if o.is_open and symbol in (None, o.symbol)]

    def account(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        assets = sorted(set(self.balances) | set(self.locked))
        balances = [{"asset": a, "free": _dec(self.balances.get(a, ZERO)), "locked": _dec(self.locked.get(a, ZERO))}
                    for a in assets]
        return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True,
                     "canDeposit": True, "updateTime": self.ctx.now_ms() * _scale(params), "accountType": "SPOT",
                     "balances": balances, "permissions": ["SPOT"]}

    def _find(self, params: Params) -> FakeOrder:
        """The order named by ``orderId`` or ``origClientOrderId`` (the newest with that id); -2013 if none."""
        self._entry(params)
        cid, oid = params.get("origClientOrderId"), params.get("orderId")
        if cid is None and oid is None:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for order in reversed(self.orders):
            if order.symbol == params["symbol"] and (order.client_order_id == cid or str(order.order_id) == oid):
                return order
        raise ApiError(400, -2013, "Order does not exist.")

    # ---- matching -------------------------------------------------------------------------------

    def _validate(self, params: Params) -> tuple[dict[str, Any], Decimal, Decimal]:
        """(symbol entry, quantity, price used for checks) of a valid order; ApiError otherwise."""
        entry = self._entry(params)
        if params.get("side") not in ("BUY", "SELL"):
            raise ApiError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        kind = params.get("type")
        last = self.last_price(entry["symbol"])
        if kind == "MARKET":
            qty, price = self._market_quantity(entry, params, last), last
        elif kind == "LIMIT":
            if params.get("timeInForce") not in ("GTC", "IOC", "FOK"):
                raise ApiError(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                           "or malformed.")
            qty, price = _decimal(params, "quantity"), _decimal(params, "price")
            _check_price(entry, price)
        else:
            raise ApiError(400, -1116, "Invalid orderType.")
        _check_filters(entry, qty, price)
        self._check_balance(entry, params["side"], qty, price)
        return entry, qty, price

    def _market_quantity(self, entry: dict[str, Any], params: Params, last: Decimal) -> Decimal:
        if ("quantity" in params) == ("quoteOrderQty" in params):
            raise ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        if "quantity" in params:
            return _decimal(params, "quantity")
        step = next((Decimal(f["stepSize"]) for f in entry.get("filters", []) if f["filterType"] == "LOT_SIZE"),
                    Decimal("0.00000001"))
        return (_decimal(params, "quoteOrderQty") / last / step).to_integral_value(ROUND_DOWN) * step

    def _check_balance(self, entry: dict[str, Any], side: str, qty: Decimal, price: Decimal) -> None:
        asset, need = (entry["quoteAsset"], qty * price) if side == "BUY" else (entry["baseAsset"], qty)
        if self.balances.get(asset, ZERO) < need:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")

    def _place(self, params: Params, cid: str) -> FakeOrder:
        """Accept a valid order: lock its funds, trade what can trade now, expire or rest the rest."""
        entry, qty, price = self._validate(params)
        symbol, side, kind = entry["symbol"], params["side"], params["type"]
        data = self.ctx.data[symbol]
        now = self.ctx.now_ms()
        order = FakeOrder(len(self.orders) + 1, symbol, cid, side, kind, params.get("timeInForce", "GTC"),
                          price if kind == "LIMIT" else ZERO, qty, Decimal(params.get("quoteOrderQty", "0")), now,
                          data.raw_happened(now))
        self._lock(order, entry, qty * price if side == "BUY" else qty)
        self._take(order, entry)
        self.orders.append(order)
        return order

    def _take(self, order: FakeOrder, entry: dict[str, Any]) -> None:
        last = self.last_price(order.symbol)
        crosses = order.type == "MARKET" or (last <= order.price if order.side == "BUY" else last >= order.price)
        available = order.remaining if self.liquidity is None else min(order.remaining, self.liquidity)
        if crosses and not (order.time_in_force == "FOK" and available < order.remaining):
            self._fill(order, entry, available, last)
        if order.remaining > 0 and (order.type == "MARKET" or order.time_in_force in ("IOC", "FOK")):
            order.status = "EXPIRED"
            self._unlock(order)

    def catch_up(self) -> None:
        """Late orders reach the engine (if still within their ``recvWindow``, which Binance checks again
        there); resting orders fill on the replayed trades that crossed them."""
        now = self.ctx.now_ms()
        due = [params for at, params in self.late if at <= now]
        self.late = [(at, params) for at, params in self.late if at > now]
        for params in due:
            try:
                self._check_time(params)
                self._place(params, params["newClientOrderId"])
            except ApiError:
                continue  # too old for the engine, or no longer valid: never executed
        for order in self.orders:
            if order.is_open:
                self._rest(order, now)

    def _rest(self, order: FakeOrder, now: int) -> None:
        data = self.ctx.data[order.symbol]
        upto = data.raw_happened(now)
        entry = next(e for e in self.ctx.exchange_info["symbols"] if e["symbol"] == order.symbol)
        for trade in data.raw[order.seen:upto]:
            price = Decimal(trade.price)
            if order.remaining > 0 and (price <= order.price if order.side == "BUY" else price >= order.price):
                self._fill(order, entry, min(order.remaining, Decimal(trade.qty)), order.price)
        order.seen = upto

    def _lock(self, order: FakeOrder, entry: dict[str, Any], amount: Decimal) -> None:
        asset = entry["quoteAsset"] if order.side == "BUY" else entry["baseAsset"]
        self.balances[asset] = self.balances.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount
        order.locked = amount

    def _unlock(self, order: FakeOrder) -> None:
        """An order that ended: what it still holds locked goes back to the free balance."""
        entry = next(e for e in self.ctx.exchange_info["symbols"] if e["symbol"] == order.symbol)
        asset = entry["quoteAsset"] if order.side == "BUY" else entry["baseAsset"]
        self.locked[asset] -= order.locked
        self.balances[asset] += order.locked
        order.locked = ZERO

    def _fill(self, order: FakeOrder, entry: dict[str, Any], qty: Decimal, price: Decimal) -> None:
        """``qty`` of ``order`` trades at ``price``: locked funds pay, the asset received comes in less commission."""
        if qty <= 0:
            return
        base, quote_asset = entry["baseAsset"], entry["quoteAsset"]
        quote = qty * price
        bal, locked = self.balances, self.locked
        if order.side == "BUY":  # what was locked at the limit price; a better price gives the change back
            fee, fee_asset = qty * self.commission_rate, base
            reserved = qty * order.price if order.type == "LIMIT" else quote
            locked[quote_asset] -= reserved
            order.locked -= reserved
            bal[quote_asset] += reserved - quote
            bal[base] = bal.get(base, ZERO) + qty - fee
        else:
            fee, fee_asset = quote * self.commission_rate, quote_asset
            locked[base] -= qty
            order.locked -= qty
            bal[quote_asset] = bal.get(quote_asset, ZERO) + quote - fee
        order.executed += qty
        order.quote += quote
        order.update_ms = self.ctx.now_ms()
        order.fills.append({"price": _dec(price), "qty": _dec(qty), "commission": _dec(fee),
                            "commissionAsset": fee_asset, "tradeId": len(order.fills) + 1000 * order.order_id})
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._unlock(order)


def _scale(params: Params) -> int:
    """1000 when the request asked for µs times (``X-MBX-TIME-UNIT: MICROSECOND``), else 1."""
    return 1000 if getattr(params, "time_unit", "") == "MICROSECOND" else 1


def _check_price(entry: dict[str, Any], price: Decimal) -> None:
    for f in entry.get("filters", []):
        if f["filterType"] != "PRICE_FILTER":
            continue
        lo, hi, tick = Decimal(f["minPrice"]), Decimal(f["maxPrice"]), Decimal(f["tickSize"])
        if (lo > 0 and price < lo) or (hi > 0 and price > hi) or (tick > 0 and (price - lo) % tick != 0):
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")


def _check_filters(entry: dict[str, Any], qty: Decimal, price: Decimal) -> None:
    for f in entry.get("filters", []):
        kind = f["filterType"]
        if kind == "LOT_SIZE" and not _lot_ok(f, qty):
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if kind in ("NOTIONAL", "MIN_NOTIONAL") and not _notional_ok(f, qty * price):
            raise ApiError(400, -1013, f"Filter failure: {kind}")


def _lot_ok(f: dict[str, Any], qty: Decimal) -> bool:
    lo, hi, step = Decimal(f["minQty"]), Decimal(f["maxQty"]), Decimal(f["stepSize"])
    if qty < lo or (hi > 0 and qty > hi):
        return False
    return step == 0 or (qty - lo) % step == 0


def _notional_ok(f: dict[str, Any], notional: Decimal) -> bool:
    lo = Decimal(f.get("minNotional", "0"))
    hi = Decimal(f.get("maxNotional", "0"))
    return notional >= lo and not (hi > 0 and f.get("applyMaxToMarket", False) and notional > hi)


def _int(params: Params, name: str) -> int:
    text = params.get(name)
    if text is None:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None


def _decimal(params: Params, name: str) -> Decimal:
    text = params.get(name)
    if not text:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if value.as_tuple().exponent < -8:  # type: ignore[operator]
        raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.")
    return value


def _dec(value: Decimal) -> str:
    return f"{value:.8f}"
