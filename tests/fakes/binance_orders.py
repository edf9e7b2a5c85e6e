"""Signed order endpoints of the fake Binance (spec §3.5-3.6): an order desk with balances and an order log.

``POST /api/v3/order`` and ``/api/v3/order/test``, ``GET /api/v3/order``, ``/api/v3/openOrders`` and
``/api/v3/account``. Every request is checked as Binance checks it: ``X-MBX-APIKEY``, the HMAC-SHA256
signature of the query string + body, ``timestamp`` against the exchange clock and ``recvWindow``,
the symbol's LOT_SIZE / PRICE_FILTER / NOTIONAL filters and the balances. MARKET orders fill at once
at the last trade price on the exchange clock; the commission (``commission_rate``) is charged in
the asset received, as Binance does without BNB. A ``newClientOrderId`` seen before is refused
with ``-2010 Duplicate order sent.``. ``desk.orders`` is the order log tests check.

    fake = FakeBinance(...)
    desk = OrderDesk.install(fake, balances={"USDT": 10_000})
    desk.execute_then_fail(1)        # the next order executes but is answered HTTP 503
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.binance_rest import ApiError, Params, RestContext, WeightFn

TEST_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
TEST_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
"""The key pair of the spec's example (§3.5): the fake accepts this one (or the one it is given)."""


class RequestParams(dict[str, str]):
    """Query (+ form body) parameters, with what signature checks need: the signed payload and the API key."""

    payload: str = ""
    signature: str = ""
    api_key: str | None = None


async def read_params(request: web.Request) -> RequestParams:
    """Parameters of a REST request: query string and body merged (the query string wins, spec §3.1)."""
    body = await request.text() if request.can_read_body else ""
    params = RequestParams({**dict(parse_qsl(body, keep_blank_values=True)), **dict(request.query)})
    params.payload, params.signature = _signed_payload(request.query_string, body)
    params.api_key = request.headers.get("X-MBX-APIKEY")
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
    """One order the desk accepted."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    qty: Decimal
    quote: Decimal
    price: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int

    def report(self, full: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_order_id,
            "transactTime": self.time_ms, "price": "0.00000000", "origQty": _dec(self.qty),
            "executedQty": _dec(self.qty), "origQuoteOrderQty": "0.00000000", "cummulativeQuoteQty": _dec(self.quote),
            "status": "FILLED", "timeInForce": "GTC", "type": "MARKET", "side": self.side,
            "workingTime": self.time_ms, "selfTradePreventionMode": "NONE"}
        if full:
            body["fills"] = [{"price": _dec(self.price), "qty": _dec(self.qty), "commission": _dec(self.commission),
                              "commissionAsset": self.commission_asset, "tradeId": self.order_id}]
        return body

    def as_queried(self) -> dict[str, Any]:
        body = self.report(False)
        body.pop("transactTime")
        return {**body, "time": self.time_ms, "updateTime": self.time_ms, "isWorking": True,
                "stopPrice": "0.00000000", "icebergQty": "0.00000000"}


@dataclass
class OrderDesk:
    """The fake's account: balances, accepted orders, and the faults of the order endpoints."""

    ctx: RestContext
    api_key: str = TEST_API_KEY
    secret: str = TEST_SECRET
    balances: dict[str, Decimal] = field(default_factory=dict)
    commission_rate: Decimal = Decimal("0.001")
    orders: list[FakeOrder] = field(default_factory=list)
    attempts: list[dict[str, str]] = field(default_factory=list)
    fail_after_execute: int = 0

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
                ("GET", "/api/v3/openOrders"): (const(6), self.open_orders),
                ("GET", "/api/v3/account"): (const(20), self.account)}

    def execute_then_fail(self, count: int = 1) -> None:
        """The next ``count`` orders execute but are answered HTTP 503 (the client cannot know)."""
        self.fail_after_execute += count

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
        """API key, signature and timing, as §3.5 says; ApiError otherwise."""
        key = getattr(params, "api_key", None)
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        expected = hmac.new(self.secret.encode(), getattr(params, "payload", "").encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, getattr(params, "signature", "").lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        self._check_time(params)

    def _check_time(self, params: Params) -> None:
        stamp = _int(params, "timestamp")
        window = Decimal(params.get("recvWindow", "5000"))
        if window > 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = self.ctx.now_ms()
        if stamp >= now + 1000:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - stamp > window:
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
        entry, side, qty = self._validate(params)
        cid = params.get("newClientOrderId") or f"fake{len(self.orders) + 1}"
        if cid in self.client_ids():
            raise ApiError(400, -2010, "Duplicate order sent.")
        order = self._execute(entry, side, qty, cid)
        if self.fail_after_execute > 0:
            self.fail_after_execute -= 1
            raise ApiError(503, -1008, "Server is currently overloaded with other requests.")
        return 200, order.report(params.get("newOrderRespType", "FULL") == "FULL")

    def get_order(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        self._entry(params)
        cid, oid = params.get("origClientOrderId"), params.get("orderId")
        if cid is None and oid is None:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for order in self.orders:
            if order.symbol == params["symbol"] and (order.client_order_id == cid or str(order.order_id) == oid):
                return 200, order.as_queried()
        raise ApiError(400, -2013, "Order does not exist.")

    def open_orders(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        return 200, []  # MARKET orders fill at once: nothing ever stays open

    def account(self, ctx: RestContext, params: Params) -> tuple[int, Any]:
        self.authenticate(params)
        balances = [{"asset": a, "free": _dec(v), "locked": "0.00000000"} for a, v in sorted(self.balances.items())]
        return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True,
                     "canDeposit": True, "updateTime": self.ctx.now_ms(), "accountType": "SPOT",
                     "balances": balances, "permissions": ["SPOT"]}

    # ---- matching -------------------------------------------------------------------------------

    def _validate(self, params: Params) -> tuple[dict[str, Any], str, Decimal]:
        entry = self._entry(params)
        side = params.get("side", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if params.get("type") != "MARKET":
            raise ApiError(400, -1116, "Invalid orderType.")
        qty = _decimal(params, "quantity")
        _check_filters(entry, qty, self.last_price(entry["symbol"]))
        self._check_balance(entry, side, qty)
        return entry, side, qty

    def _check_balance(self, entry: dict[str, Any], side: str, qty: Decimal) -> None:
        price = self.last_price(entry["symbol"])
        asset, need = (entry["quoteAsset"], qty * price) if side == "BUY" else (entry["baseAsset"], qty)
        if self.balances.get(asset, Decimal(0)) < need:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")

    def _execute(self, entry: dict[str, Any], side: str, qty: Decimal, cid: str) -> FakeOrder:
        price = self.last_price(entry["symbol"])
        quote = qty * price
        base, quote_asset = entry["baseAsset"], entry["quoteAsset"]
        bal = self.balances
        if side == "BUY":
            fee, fee_asset = qty * self.commission_rate, base
            bal[quote_asset] = bal.get(quote_asset, Decimal(0)) - quote
            bal[base] = bal.get(base, Decimal(0)) + qty - fee
        else:
            fee, fee_asset = quote * self.commission_rate, quote_asset
            bal[base] = bal.get(base, Decimal(0)) - qty
            bal[quote_asset] = bal.get(quote_asset, Decimal(0)) + quote - fee
        order = FakeOrder(len(self.orders) + 1, entry["symbol"], cid, side, qty, quote, price, fee, fee_asset,
                          self.ctx.now_ms())
        self.orders.append(order)
        return order


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
