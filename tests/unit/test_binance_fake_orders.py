"""The fake Binance's order desk against the spec: answer types, µs times, LIMIT time-in-force rules,
fills against the replayed trades, cancel, open orders, quoteOrderQty (signed requests over real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from dope.trading.binance import sign
from tests.fakes.binance import FakeBinance, FakeConfig, run_in_thread
from tests.fakes.binance_orders import TEST_API_KEY, TEST_SECRET, OrderDesk

SYMBOL = "BTCUSDT"


@pytest.fixture()
def desk() -> Iterator[tuple[FakeBinance, OrderDesk]]:
    fake = FakeBinance(config=FakeConfig(speed=0))  # the exchange clock moves only when the test steps it
    fake.clock.step(60_000)
    with run_in_thread(fake):
        yield fake, OrderDesk.install(fake, balances={"USDT": 10_000.0, "BTC": 1.0})


def call(fake: FakeBinance, method: str, path: str, params: dict[str, str], *, micro: bool = False,
         age_ms: int = 0) -> tuple[int, Any]:
    """One signed request made ``age_ms`` ago; ``timestamp`` in µs (16 digits) and µs answers when ``micro``."""
    stamp = (fake.clock.now_ms() - age_ms) * (1000 if micro else 1)
    query = urlencode({**params, "timestamp": str(stamp)})
    query += "&signature=" + sign(TEST_SECRET, query)
    headers = {"X-MBX-APIKEY": TEST_API_KEY, **({"X-MBX-TIME-UNIT": "MICROSECOND"} if micro else {})}

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.request(
                method, f"{fake.rest_url}{path}?{query}", headers=headers) as resp:
            return resp.status, await resp.json()

    return asyncio.run(go())


def order(side: str, kind: str, **extra: str) -> dict[str, str]:
    return {"symbol": SYMBOL, "side": side, "type": kind, **extra}


def test_answer_types_follow_the_spec_and_times_can_be_microseconds(desk: tuple[FakeBinance, OrderDesk]) -> None:
    fake, _ = desk
    ack_keys = {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    result_keys = ack_keys | {"price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
                              "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode"}
    answers = {t: call(fake, "POST", "/api/v3/order", order("BUY", "MARKET", quantity="0.001", newOrderRespType=t))[1]
               for t in ("ACK", "RESULT", "FULL")}
    assert set(answers["ACK"]) == ack_keys and set(answers["RESULT"]) == result_keys
    assert set(answers["FULL"]) == result_keys | {"fills"} and answers["FULL"]["fills"][0]["qty"] == "0.00100000"
    status, micro = call(fake, "POST", "/api/v3/order", order("BUY", "MARKET", quantity="0.001"), micro=True)
    assert status == 200 and micro["transactTime"] == fake.clock.now_ms() * 1000 and len(str(micro["transactTime"])) == 16
    status, queried = call(fake, "GET", "/api/v3/order", {"symbol": SYMBOL, "orderId": str(micro["orderId"])},
                           micro=True)
    assert status == 200 and queried["time"] == micro["transactTime"] and queried["updateTime"] >= queried["time"]
    for age_ms, code in ((4_000, None), (6_000, -1021)):  # the 5 s recvWindow, counted in µs
        status, body = call(fake, "GET", "/api/v3/openOrders", {"symbol": SYMBOL}, micro=True, age_ms=age_ms)
        assert (status, body if code is None else body["code"]) == ((200, []) if code is None else (400, code))


def test_limit_time_in_force_and_liquidity(desk: tuple[FakeBinance, OrderDesk]) -> None:
    fake, book = desk
    book.liquidity = Decimal("0.004")
    high = f"{float(book.last_price(SYMBOL)) * 1.01:.2f}"  # marketable buy
    _, ioc = call(fake, "POST", "/api/v3/order", order("BUY", "LIMIT", timeInForce="IOC", quantity="0.01", price=high))
    assert (ioc["status"], ioc["executedQty"]) == ("EXPIRED", "0.00400000")
    _, fok = call(fake, "POST", "/api/v3/order", order("BUY", "LIMIT", timeInForce="FOK", quantity="0.01", price=high))
    assert (fok["status"], fok["executedQty"], fok["fills"]) == ("EXPIRED", "0.00000000", [])
    _, market = call(fake, "POST", "/api/v3/order", order("SELL", "MARKET", quantity="0.01"))
    assert (market["status"], market["executedQty"]) == ("EXPIRED", "0.00400000")
    _, gtc = call(fake, "POST", "/api/v3/order", order("BUY", "LIMIT", timeInForce="GTC", quantity="0.01", price=high))
    assert (gtc["status"], gtc["executedQty"]) == ("PARTIALLY_FILLED", "0.00400000")
    assert book.locked["USDT"] == Decimal("0.006") * Decimal(high)            # the rest waits, its funds locked
    assert book.locked["BTC"] == 0 and sum(book.balances.values()) > 0


def test_a_resting_order_fills_on_the_replayed_trades_that_cross_it(desk: tuple[FakeBinance, OrderDesk]) -> None:
    fake, book = desk
    data = fake.data[SYMBOL]
    now = fake.clock.now_ms()
    later = [t for t in data.raw if now < t.time <= now + 120_000]
    low = min(Decimal(t.price) for t in later)
    price = low + Decimal("0.01")  # only the trades at the lowest price of the next two minutes cross it
    _, placed = call(fake, "POST", "/api/v3/order", order("BUY", "LIMIT", timeInForce="GTC", quantity="0.1",
                                                          price=str(price), newClientOrderId="resting"))
    assert placed["status"] == "NEW" and placed["fills"] == []
    _, still = call(fake, "GET", "/api/v3/openOrders", {"symbol": SYMBOL})
    assert [o["clientOrderId"] for o in still] == ["resting"]
    fake.clock.step(120_000)
    _, after = call(fake, "GET", "/api/v3/order", {"symbol": SYMBOL, "origClientOrderId": "resting"})
    crossing = sum(Decimal(t.qty) for t in later if Decimal(t.price) <= price)
    assert Decimal(after["executedQty"]) == min(crossing, Decimal("0.1")) > 0
    assert Decimal(after["cummulativeQuoteQty"]) == Decimal(after["executedQty"]) * price   # at its limit price


def test_cancel_quote_order_qty_and_open_orders(desk: tuple[FakeBinance, OrderDesk]) -> None:
    fake, book = desk
    low = f"{float(book.last_price(SYMBOL)) * 0.5:.2f}"
    _, placed = call(fake, "POST", "/api/v3/order", order("BUY", "LIMIT", timeInForce="GTC", quantity="0.01",
                                                          price=low, newClientOrderId="cheap"))
    assert book.balances["USDT"] == Decimal("10000.0") - Decimal("0.01") * Decimal(low)
    status, canceled = call(fake, "DELETE", "/api/v3/order", {"symbol": SYMBOL, "origClientOrderId": "cheap"})
    assert status == 200 and canceled["status"] == "CANCELED" and canceled["origClientOrderId"] == "cheap"
    assert book.balances["USDT"] == Decimal("10000.0") and book.locked["USDT"] == 0
    status, again = call(fake, "DELETE", "/api/v3/order", {"symbol": SYMBOL, "orderId": str(placed["orderId"])})
    assert (status, again["code"]) == (400, -2011)
    assert call(fake, "GET", "/api/v3/openOrders", {})[1] == []
    _, spent = call(fake, "POST", "/api/v3/order", order("BUY", "MARKET", quoteOrderQty="100"))
    assert spent["origQuoteOrderQty"] == "100.00000000" and Decimal(spent["cummulativeQuoteQty"]) <= 100
    assert Decimal(spent["executedQty"]) > 0 and spent["status"] == "FILLED"
    status, err = call(fake, "POST", "/api/v3/order", order("BUY", "MARKET"))
    assert (status, err["code"]) == (400, -1102)
