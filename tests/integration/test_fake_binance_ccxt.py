"""The fake Binance checked by a client nobody here wrote: ccxt's Binance adapter, pointed at the fake.

ccxt (a test-only dependency) loads the real recorded exchange info, reads klines, places MARKET
and LIMIT orders, fetches and cancels them and reads the balances, all through the fake's signed
endpoints. Every URL ccxt knows is pointed at the fake, so a call to anything else is a 404 here
(and a failed test), never a request to the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_shared_data
from tests.fakes.binance import FakeBinance, FakeConfig, run_in_thread
from tests.fakes.binance_orders import TEST_API_KEY, TEST_SECRET, OrderDesk

ccxt = pytest.importorskip("ccxt")

SYMBOL = "BTC/USDT"


@pytest.fixture()
def exchange() -> Iterator[tuple[Any, FakeBinance, OrderDesk]]:
    shared = require_shared_data("binance", "rest", "exchangeInfo-2021-10-12.json.gz").parents[2]
    fake = FakeBinance(config=FakeConfig(speed=1.0, shared_data=shared))
    fake.clock.step(300_000)  # five minutes of trades have happened: klines to read, a price to trade at
    desk = OrderDesk.install(fake, balances={"USDT": 10_000.0})
    with run_in_thread(fake):
        client = ccxt.binance({"apiKey": TEST_API_KEY, "secret": TEST_SECRET, "enableRateLimit": False,
                               "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False,
                                           "adjustForTimeDifference": True}})
        for name, url in client.urls["api"].items():  # every API ccxt knows -> the fake
            client.urls["api"][name] = fake.rest_url + urlsplit(url).path
        yield client, fake, desk


def test_ccxt_trades_against_the_fake(exchange: tuple[Any, FakeBinance, OrderDesk]) -> None:
    client, fake, desk = exchange
    markets = client.load_markets()
    assert len(markets) > 1000 and markets[SYMBOL]["id"] == "BTCUSDT"    # the real recorded exchange info
    candles = client.fetch_ohlcv(SYMBOL, "1m", limit=10)
    assert len(candles) >= 4 and all(c[0] % 60_000 == 0 and c[2] >= c[3] > 0 for c in candles)
    price = float(desk.last_price("BTCUSDT"))

    bought = client.create_order(SYMBOL, "market", "buy", 0.01)
    assert bought["status"] == "closed" and bought["filled"] == pytest.approx(0.01)
    assert bought["average"] == pytest.approx(price)

    resting = client.create_order(SYMBOL, "limit", "buy", 0.01, round(price * 0.9, 2))
    assert resting["status"] == "open" and resting["filled"] == 0
    seen = client.fetch_order(resting["id"], SYMBOL)
    assert seen["status"] == "open" and seen["price"] == pytest.approx(round(price * 0.9, 2))
    assert client.fetch_balance()["USDT"]["used"] == pytest.approx(0.01 * round(price * 0.9, 2))
    canceled = client.cancel_order(resting["id"], SYMBOL)
    assert canceled["status"] == "canceled"
    assert client.fetch_order(resting["id"], SYMBOL)["status"] == "canceled"

    taken = client.create_order(SYMBOL, "limit", "sell", 0.005, round(price * 0.99, 2))  # marketable: fills now
    assert taken["status"] == "closed" and taken["filled"] == pytest.approx(0.005)

    balance = client.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(float(desk.balances["BTC"]))
    assert balance["BTC"]["free"] == pytest.approx(0.01 * 0.999 - 0.005)
    assert balance["USDT"]["used"] == 0 and balance["USDT"]["free"] == pytest.approx(float(desk.balances["USDT"]))
    assert [o.status for o in desk.orders] == ["FILLED", "CANCELED", "FILLED"]
    assert desk.locked["USDT"] == Decimal(0)
    paths = {r.path for r in fake.requests}
    assert all(r.status == 200 for r in fake.requests), [(r.path, r.status) for r in fake.requests if r.status != 200]
    assert paths <= {"/api/v3/exchangeInfo", "/api/v3/time", "/api/v3/klines", "/api/v3/order", "/api/v3/account"}
