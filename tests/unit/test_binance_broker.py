"""The Binance broker: signing (spec test vector), idempotent ids, filters, error handling and
reconciliation against the fake Binance's order desk, and secrets that never reach a log."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest

from dope.clock import LiveClock
from dope.config import ConfigError
from dope.trading.binance import (
    BinanceBroker,
    BinanceOrderClient,
    Credentials,
    IpBanned,
    OrderRejected,
    SymbolFilters,
    check_signed_url,
    client_order_id,
    reconcile,
    sign,
)
from dope.trading.journal import FillRecord, IntentRecord, Journal, OrderRecord, fold, read_journal
from dope.trading.live import restored_portfolio
from dope.trading.orders import Order
from dope.trading.portfolio import Portfolio
from tests.fakes.binance import FakeBinance, FakeConfig, run_in_thread
from tests.fakes.binance_faults import OrderFault
from tests.fakes.binance_orders import TEST_API_KEY, TEST_SECRET, OrderDesk

SYMBOL = "BTCUSDT"
CREDS = Credentials(TEST_API_KEY, TEST_SECRET)


# ---- pure pieces ------------------------------------------------------------------------------

def test_signature_matches_the_spec_test_vector() -> None:
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
               "&timestamp=1499827319559")
    assert sign(TEST_SECRET, payload) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_client_order_ids_are_deterministic_and_valid() -> None:
    a = client_order_id(SYMBOL, 1723161240000, "open")
    assert a == client_order_id(SYMBOL, 1723161240000, "open")
    assert a != client_order_id(SYMBOL, 1723161240000, "close") != client_order_id(SYMBOL, 1723161250000, "open")
    long_one = client_order_id("AVERYLONGSYMBOLNAMEUSDT", 1723161240000, "close")
    for cid in (a, long_one):
        assert len(cid) <= 36 and all(c.isalnum() or c in "-_" for c in cid)


def test_credentials_are_redacted_and_named_when_missing() -> None:
    assert TEST_SECRET not in repr(CREDS) and TEST_API_KEY not in str(CREDS)
    assert CREDS.redact(f"key {TEST_API_KEY} secret {TEST_SECRET}") == "key *** secret ***"
    with pytest.raises(ConfigError, match="BINANCE_API_SECRET") as err:
        Credentials.from_env({"BINANCE_API_KEY": "abc"})
    assert "abc" not in str(err.value)


@pytest.mark.parametrize("url", ["http://api.binance.com", "http://10.0.0.5:8080", "ftp://127.0.0.1"])
def test_signed_requests_need_https_unless_the_host_is_loopback(url: str) -> None:
    async def make() -> None:
        async with aiohttp.ClientSession() as session:
            BinanceOrderClient(session, url, CREDS, LiveClock())

    with pytest.raises(ConfigError, match="https"):
        asyncio.run(make())
    for fine in ("https://api.binance.com", "http://127.0.0.1:5", "http://localhost:5", "http://[::1]:5"):
        check_signed_url(fine)


def test_filters_round_quantities_down_and_check_notional() -> None:
    f = SymbolFilters(SYMBOL, "BTC", "USDT", step=Decimal("0.00001"), min_qty=Decimal("0.00001"),
                      max_qty=Decimal("9000"), min_notional=Decimal("5"))
    assert f.quantity(0.123456789) == Decimal("0.12345")
    assert f.quantity(1e6) == Decimal("9000")
    assert f.problem(Decimal("0.00001"), 60_000.0) is not None  # 0.6 USDT < 5
    assert f.problem(Decimal("0"), 60_000.0) is not None
    assert f.problem(Decimal("0.001"), 60_000.0) is None


# ---- against the fake -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def running_fake() -> Iterator[FakeBinance]:
    fake = FakeBinance(config=FakeConfig(speed=1.0))
    with run_in_thread(fake):
        yield fake


@pytest.fixture()
def exchange(running_fake: FakeBinance) -> tuple[FakeBinance, OrderDesk]:
    """The fake with a fresh account (10,000 USDT), no queued faults and an empty request log."""
    running_fake.requests.clear()
    running_fake.faults.rest.clear()
    return running_fake, OrderDesk.install(running_fake, balances={"USDT": 10_000.0})


Scenario = Callable[[BinanceOrderClient, BinanceBroker], Awaitable[Any]]


class SteppedClock:
    """The local clock plus the time the client's sleeps skipped; a sleep also steps the fake's clock.

    The client waits (backoff, rate-limit pauses, the window of an unknown outcome) without the
    test waiting, and the exchange sees the same time pass.
    """

    def __init__(self, fake: FakeBinance) -> None:
        self.fake, self.skipped_ms, self.sleeps = fake, 0, list[float]()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.skipped_ms

    async def sleep_until(self, time_ms: int) -> None:
        await self.sleep((time_ms - self.now_ms()) / 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        step = max(int(seconds * 1000), 0)
        self.skipped_ms += step
        self.fake.clock.step(step)


def run(fake: FakeBinance, scenario: Scenario, *, portfolio: Portfolio | None = None, journal: Journal | None = None,
        sleeps: list[float] | None = None, max_order_age_ms: int = 0, timeout_ms: int = 10_000) -> Any:
    async def main() -> Any:
        clock = SteppedClock(fake)
        async with aiohttp.ClientSession() as session:
            client = BinanceOrderClient(session, fake.rest_url, CREDS, clock, sleep=clock.sleep, timeout_ms=timeout_ms)
            await client.sync_time()
            filters = await client.exchange_filters(SYMBOL)
            broker = BinanceBroker(client, filters, portfolio or Portfolio(1_000.0),
                                   journal=journal.append if journal else None, max_order_age_ms=max_order_age_ms)
            try:
                return await scenario(client, broker)
            finally:
                if sleeps is not None:
                    sleeps.extend(clock.sleeps)

    return asyncio.run(main())


def buy(open_time: int = 1) -> Scenario:
    async def go(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        broker.submit(Order(symbol=SYMBOL, time_ms=0, target=1, prediction=1.0))
        fills = await broker.execute(open_time, 60_000.0)
        return client, broker, fills

    return go


def test_a_market_order_is_signed_filled_and_booked(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange
    client, broker, fills = run(fake, buy())
    assert desk.client_ids() == [client_order_id(SYMBOL, 1, "open")]
    order = desk.orders[0]
    assert len(fills) == 1 and fills[0].qty == pytest.approx(float(order.qty - order.commission))
    assert broker.portfolio.direction == 1
    # cash moves by exactly what the exchange took; the base commission is booked as a fee
    assert broker.portfolio.cash == pytest.approx(1_000.0 - float(order.quote))
    assert desk.balances["BTC"] == Decimal(repr(broker.portfolio.qty))


def limit_params(cid: str, price: str, tif: str = "GTC", qty: str = "0.001") -> dict[str, str]:
    return {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": tif, "quantity": qty, "price": price,
            "newClientOrderId": cid}


def test_the_fake_refuses_a_reused_id_only_while_an_open_order_has_it(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    """Binance's rule: the id of a filled MARKET order can be used again; an open order's cannot."""
    fake, desk = exchange
    run(fake, buy())
    cid = client_order_id(SYMBOL, 1, "open")

    async def again(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        await client.market_order(SYMBOL, "BUY", Decimal("0.001"), cid)  # accepted: a second order
        low = f"{float(desk.last_price(SYMBOL)) * 0.5:.2f}"
        await client.request("POST", "/api/v3/order", limit_params("dope-resting", low))
        refused = await client.request("POST", "/api/v3/order", limit_params("dope-resting", low), accept=(-2010,))
        return refused, await client.open_orders(SYMBOL)

    refused, open_orders = run(fake, again)
    assert desk.client_ids() == [cid, cid, "dope-resting"]
    assert refused.error is not None and refused.error.msg == "Duplicate order sent."
    assert [o.clientOrderId for o in open_orders] == ["dope-resting"]


def test_429_waits_retry_after_then_sends_once(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange
    fake.faults.fail_next_rest(429, retry_after=3, path="/api/v3/order")
    sleeps: list[float] = []
    client, _, fills = run(fake, buy(), sleeps=sleeps)
    assert sleeps == pytest.approx([3.0], abs=0.05) and client.counters["rate_limited"] == 1
    assert len(desk.orders) == 1 and len(fills) == 1


def test_429_without_retry_after_backs_off_by_itself_and_says_so(exchange: tuple[FakeBinance, OrderDesk],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    fake, desk = exchange
    for _ in range(2):
        fake.faults.fail_next_rest(429, path="/api/v3/order")
    sleeps: list[float] = []
    caplog.set_level(logging.WARNING, logger="dope.trader.binance")
    client, _, fills = run(fake, buy(), sleeps=sleeps)
    assert sleeps == pytest.approx([1.0, 2.0], abs=0.05) and client.counters["rate_limited"] == 2  # by itself
    said = [r.getMessage() for r in caplog.records if "429" in r.getMessage()]
    assert len(said) == 2 and all("no Retry-After" in m and "asks" not in m for m in said)
    assert len(desk.orders) == 1 and len(fills) == 1


def test_an_order_past_its_maximum_age_is_dropped_journaled_and_counted(
        exchange: tuple[FakeBinance, OrderDesk], tmp_path: Path) -> None:
    fake, desk = exchange
    fake.faults.fail_next_rest(429, retry_after=10, path="/api/v3/order")  # 10 s pause > 2 s maximum age
    sleeps: list[float] = []
    with Journal(tmp_path / "j") as journal:
        client, broker, fills = run(fake, buy(), journal=journal, sleeps=sleeps, max_order_age_ms=2_000)
    assert fills == () and desk.orders == [] and sleeps == []      # not sent, and not waited for
    assert client.counters["orders_dropped_stale"] == 1
    assert broker.problem is not None and "maximum age" in broker.problem
    record = read_journal(tmp_path / "j")[-1]
    assert isinstance(record, OrderRecord) and record.status == "DROPPED" and "maximum age" in record.reason


def test_418_bans_every_request_for_its_duration_and_never_sends_the_old_order(
        exchange: tuple[FakeBinance, OrderDesk], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake, desk = exchange
    fake.faults.fail_next_rest(418, retry_after=259_200, path="/api/v3/order")   # three days
    sleeps: list[float] = []

    async def banned(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        first = await buy(open_time=1)(client, broker)
        try:
            await client.account()
        except IpBanned as exc:
            return first, exc
        raise AssertionError("a request went out during the ban")

    with Journal(tmp_path / "j") as journal:
        (client, broker, fills), refused = run(fake, banned, journal=journal, sleeps=sleeps)
    assert fills == () and desk.orders == [] and max(sleeps, default=0.0) < 60
    assert [(r.method, r.status) for r in fake.requests if r.path.startswith(("/api/v3/order", "/api/v3/account"))
            ] == [("POST", 418)]
    assert client.banned_until_ms - client.clock.now_ms() > 259_000_000 and refused.until_ms == client.banned_until_ms
    assert client.counters["ip_banned"] == 1
    assert any(r.levelno == logging.ERROR and "418" in r.getMessage() for r in caplog.records)
    record = read_journal(tmp_path / "j")[-1]
    assert isinstance(record, OrderRecord) and record.status == "DROPPED"


def test_timestamp_outside_recv_window_resyncs_the_clock(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange

    async def skewed(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        client.offset_ms -= 3_600_000  # our clock an hour behind the exchange
        return await buy()(client, broker)

    client, _, fills = run(fake, skewed)
    assert client.counters["timestamp_resyncs"] == 1 and client.counters["time_syncs"] == 2
    assert len(desk.orders) == 1 and len(fills) == 1
    assert any(r.status == 400 and r.path == "/api/v3/order" for r in fake.requests)


def test_5xx_before_execution_is_queried_then_resent_once(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange
    fake.faults.fail_next_rest(503, path="/api/v3/order")
    client, _, fills = run(fake, buy())
    assert client.counters["unknown_status"] == 1
    calls = [r for r in fake.requests if r.path == "/api/v3/order"]
    methods = [(r.method, r.status) for r in calls]
    # asked again and again (-2013) until the order could no longer reach the engine, then resent once
    assert methods[0] == ("POST", 503) and methods[-1] == ("POST", 200)
    assert set(methods[1:-1]) == {("GET", 400)} and len(methods) > 3
    assert calls[-1].time_ms - calls[0].time_ms >= client.recv_window_ms
    assert client.counters["orders_absent_after_unknown"] == 1
    assert len(desk.orders) == 1 and len(fills) == 1


def test_5xx_after_execution_finds_the_order_and_never_resends(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange
    desk.execute_then_fail(1)
    client, broker, fills = run(fake, buy())
    assert client.counters["orders_found_after_unknown"] == 1
    assert len(desk.attempts) == 1 and len(desk.orders) == 1
    assert len(fills) == 1 and broker.portfolio.direction == 1


@pytest.mark.parametrize("fault", [OrderFault("error", 503, -1008), OrderFault("error", 400, -1007), OrderFault("lose"),
                                   OrderFault("delay", delay_s=3.0), OrderFault("late", late_ms=3_000)],
                         ids=["5xx", "-1007", "lost", "delayed", "late"])
def test_an_order_whose_answer_never_came_is_found_and_never_doubled(exchange: tuple[FakeBinance, OrderDesk],
                                                                     fault: OrderFault) -> None:
    fake, desk = exchange
    desk.inject(fault)
    client, broker, fills = run(fake, buy(), timeout_ms=1_500)
    fake.clock.step(60_000)
    desk.catch_up()  # anything still on its way reaches the book
    assert len(desk.orders) == 1 and len(desk.attempts) == 1        # exactly one order, sent once
    assert client.counters["orders_found_after_unknown"] == 1
    assert len(fills) == 1 and broker.portfolio.direction == 1


def test_an_order_is_never_resent_while_its_outcome_is_unknown(exchange: tuple[FakeBinance, OrderDesk],
                                                               tmp_path: Path) -> None:
    fake, desk = exchange
    for _ in range(40):  # the order's answer, then every query, is a 5xx
        fake.faults.fail_next_rest(503, path="/api/v3/order")

    async def unknown(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        client.unknown_give_up_ms = 2_000
        return await buy()(client, broker)

    with Journal(tmp_path / "j") as journal:
        client, broker, fills = run(fake, unknown, journal=journal)
    posts = [r for r in fake.requests if r.method == "POST" and r.path == "/api/v3/order"]
    assert len(posts) == 1 and fills == () and client.counters["orders_unknown"] == 1
    assert broker.problem is not None and broker.problem.startswith("order outcome unknown")
    history = fold(read_journal(tmp_path / "j"))[SYMBOL]
    assert list(history.open_intents) == [client_order_id(SYMBOL, 1, "open")]   # left to the reconciliation


def test_a_partly_executed_market_order_is_booked_as_a_partial_fill(exchange: tuple[FakeBinance, OrderDesk],
                                                                    tmp_path: Path) -> None:
    fake, desk = exchange

    async def buy_then_sell_in_thin_market(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        await buy(open_time=1)(client, broker)
        held = broker.portfolio.qty
        desk.liquidity = Decimal("0.005")  # the book holds 0.005 BTC: the close expires partly executed
        broker.submit(Order(symbol=SYMBOL, time_ms=0, target=0, prediction=-1.0))
        return held, await broker.execute(2, 60_000.0)

    with Journal(tmp_path / "j") as journal:
        held, fills = run(fake, buy_then_sell_in_thin_market, journal=journal)
    sell = desk.orders[-1]
    assert sell.status == "EXPIRED" and sell.executed == Decimal("0.005") < sell.orig_qty
    assert len(fills) == 1 and fills[0].qty == pytest.approx(0.005)
    record = read_journal(tmp_path / "j")[-1]
    assert isinstance(record, FillRecord) and Decimal(record.unfilled) == sell.orig_qty - sell.executed
    history = fold(read_journal(tmp_path / "j"))[SYMBOL]
    portfolio = restored_portfolio(1_000.0, history)
    # the position and the cash follow what executed: still long the rest, as the exchange says
    assert portfolio.direction == 1 and portfolio.qty == pytest.approx(held - 0.005)
    assert float(desk.balances["BTC"]) == pytest.approx(portfolio.qty + history.dust, abs=1e-12)
    assert float(desk.balances["USDT"]) - 9_000.0 == pytest.approx(portfolio.cash, abs=1e-6)


def test_rejected_order_books_nothing(exchange: tuple[FakeBinance, OrderDesk], tmp_path: Path) -> None:
    fake, desk = exchange
    desk.balances["USDT"] = Decimal("1")  # not enough for the 5 USDT minimum order... nor anything
    with Journal(tmp_path / "j") as journal:
        _, broker, fills = run(fake, buy(), portfolio=Portfolio(1_000.0), journal=journal)
    assert fills == () and broker.portfolio.direction == 0 and desk.orders == []
    records = read_journal(tmp_path / "j")
    assert isinstance(records[-1], OrderRecord) and records[-1].status == "REJECTED"
    assert "insufficient balance" in records[-1].reason

    async def direct(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        return await client.market_order(SYMBOL, "BUY", Decimal("0.001"), "dope-x")

    with pytest.raises(OrderRejected) as err:
        run(fake, direct)
    assert err.value.code == -2010


def test_reconcile_books_an_order_whose_answer_was_lost(exchange: tuple[FakeBinance, OrderDesk],
                                                         tmp_path: Path) -> None:
    """The process died after sending: the journal has the intent, the exchange has the order."""
    fake, desk = exchange
    path = tmp_path / "trader.journal"
    with Journal(path) as journal:
        run(fake, buy(open_time=7), journal=journal)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # lose the fill record, keep the intent
    history = fold(read_journal(path))[SYMBOL]
    assert list(history.open_intents) == [client_order_id(SYMBOL, 7, "open")]

    async def restart(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        return broker, await reconcile(broker, history)

    with Journal(path) as journal:
        broker, problems = run(fake, restart, journal=journal)
    assert broker.portfolio.direction == 1 and len(desk.orders) == 1
    assert problems == []
    after = fold(read_journal(path))[SYMBOL]
    assert after.open_intents == {} and after.baseline is not None and after.baseline.amount == pytest.approx(0.0)


def send_and_die(cid: str) -> Scenario:
    """Journal the intent of a MARKET buy with id ``cid``, send it once, and stop: a trader killed right after
    sending (the answer, if any, is never read back into the journal)."""
    async def go(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        broker.journal(IntentRecord(symbol=SYMBOL, client_order_id=cid, side="BUY", qty="0.001", open_time=9,
                                    time_ms=client.clock.now_ms()))
        params = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.001", "newClientOrderId": cid}
        return await client._attempt("POST", "/api/v3/order", params)

    return go


def test_reconcile_waits_for_an_order_still_on_its_way(exchange: tuple[FakeBinance, OrderDesk],
                                                       tmp_path: Path) -> None:
    """Killed right after sending: at the restart the order is not on the books yet, but will be."""
    fake, desk = exchange
    path = tmp_path / "trader.journal"
    cid = client_order_id(SYMBOL, 9, "open")
    desk.inject(OrderFault("late", late_ms=3_000))

    with Journal(path) as journal:
        answer = run(fake, send_and_die(cid), journal=journal)
    assert answer is not None and answer.status == 503 and desk.orders == []
    history = fold(read_journal(path))[SYMBOL]

    async def restart(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        return broker, await reconcile(broker, history)

    with Journal(path) as journal:
        broker, problems = run(fake, restart, journal=journal)
    assert desk.client_ids() == [cid] and broker.portfolio.direction == 1 and problems == []
    assert fold(read_journal(path))[SYMBOL].open_intents == {}


def test_a_restarted_trader_keeps_the_ban_and_sends_nothing(tmp_path: Path) -> None:
    from dope.config import TraderConfig
    from dope.trading.journal import StepRecord
    from dope.trading.live import SymbolTrader
    from dope.trading.risk import RiskState

    until = time.time_ns() // 1_000_000 + 60_000
    history = fold([StepRecord(symbol=SYMBOL, open_time=0, close=1.0,
                               risk=RiskState(killed=True, reason="exchange halt: ban", halted_until_ms=until))])
    client = BinanceOrderClient(cast(Any, None), "http://127.0.0.1:1", CREDS, LiveClock())
    filters = SymbolFilters(SYMBOL, "BTC", "USDT")
    t = SymbolTrader(SYMBOL, TraderConfig(broker="binance"), history[SYMBOL],
                     make_broker=lambda pf: BinanceBroker(client, filters, pf))
    assert client.banned_until_ms == until and t.risk.state.killed
    with pytest.raises(IpBanned):
        asyncio.run(client.account())   # nothing goes out (the URL has no server: it would fail otherwise)


def test_reconcile_closes_an_intent_that_never_reached_the_exchange(exchange: tuple[FakeBinance, OrderDesk],
                                                                    tmp_path: Path) -> None:
    fake, desk = exchange
    path = tmp_path / "trader.journal"
    from dope.trading.journal import IntentRecord

    with Journal(path) as journal:
        journal.append(IntentRecord(symbol=SYMBOL, client_order_id="dope-BTCUSDT-5-open", side="BUY", qty="0.001",
                                    open_time=5))
    history = fold(read_journal(path))[SYMBOL]

    async def restart(client: BinanceOrderClient, broker: BinanceBroker) -> Any:
        return await reconcile(broker, history)

    with Journal(path) as journal:
        run(fake, restart, journal=journal)
    after = fold(read_journal(path))[SYMBOL]
    assert after.open_intents == {} and "dope-BTCUSDT-5-open" in after.finished_orders
    assert desk.orders == []  # never resent


def test_reconcile_reports_a_balance_that_does_not_match(exchange: tuple[FakeBinance, OrderDesk],
                                                         tmp_path: Path) -> None:
    fake, desk = exchange
    path = tmp_path / "trader.journal"
    with Journal(path) as journal:
        run(fake, lambda c, b: reconcile(b, None), journal=journal)  # first start: baseline 0 BTC
    desk.balances["BTC"] = Decimal("0.5")  # someone else traded on the account
    history = fold(read_journal(path))[SYMBOL]
    with Journal(path) as journal:
        problems = run(fake, lambda c, b: reconcile(b, history), journal=journal)
    assert len(problems) == 1 and "BTC balance" in problems[0]


def test_a_signature_made_with_another_secret_is_refused(exchange: tuple[FakeBinance, OrderDesk]) -> None:
    fake, desk = exchange

    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            client = BinanceOrderClient(session, fake.rest_url, Credentials(TEST_API_KEY, "wrong-secret"),
                                        LiveClock())
            await client.sync_time()
            return await client.market_order(SYMBOL, "BUY", Decimal("0.001"), "dope-y")

    with pytest.raises(OrderRejected) as err:
        asyncio.run(main())
    assert err.value.code == -1022 and desk.orders == []


def test_secrets_never_reach_the_logs(exchange: tuple[FakeBinance, OrderDesk], caplog: pytest.LogCaptureFixture) -> None:
    fake, desk = exchange
    fake.faults.fail_next_rest(503, path="/api/v3/order")
    fake.faults.fail_next_rest(429, retry_after=1, path="/api/v3/order")
    desk.execute_then_fail(1)
    caplog.set_level(logging.DEBUG)
    client, broker, _ = run(fake, buy())
    text = caplog.text + repr(client) + repr(broker)
    assert caplog.records, "the faults should have been logged"
    assert TEST_SECRET not in text and TEST_API_KEY not in text


# ---- the live trader with the Binance broker ----------------------------------------------------

def test_real_orders_need_the_opt_in_and_keys_from_the_environment() -> None:
    from dope.config import config_from_dict
    from dope.services.trader import binance_runtime

    config = config_from_dict({"trader": {"broker": "binance"}})
    with pytest.raises(ConfigError, match="--live"):
        binance_runtime(config, live=False, environ={})
    with pytest.raises(ConfigError, match="BINANCE_API_KEY and BINANCE_API_SECRET"):
        binance_runtime(config, live=True, environ={})
    with pytest.raises(ConfigError, match="cannot short"):
        config_from_dict({"trader": {"broker": "binance", "allow_short": True}})


def test_live_trader_sends_orders_at_once_and_the_kill_switch_flattens_at_once(
        exchange: tuple[FakeBinance, OrderDesk], tmp_path: Path) -> None:
    from dope.config import RiskConfig, TraderConfig
    from dope.messages import Decision, Equity, Fill
    from dope.services.trader import BinanceRuntime
    from dope.trading.live import SymbolTrader
    from tests.trader_helpers import INTERVAL, START, make_bar, make_prediction

    fake, desk = exchange
    config = TraderConfig(broker="binance", initial_cash=2_000.0, upper=0.001, lower=-0.001,
                          risk=RiskConfig(max_daily_loss=50.0))
    runtime = BinanceRuntime(config, fake.rest_url, CREDS)
    try:
        runtime.start()
        with Journal(tmp_path / "j") as journal:
            t = SymbolTrader(SYMBOL, config, None, journal=journal, execute=runtime.execute,
                             make_broker=lambda pf: runtime.broker(SYMBOL, pf, journal, None))
            price = float(desk.last_price(SYMBOL))
            out = t.on_bar(make_bar(START, price, price), 0) + t.on_prediction(make_prediction(START, 0.01), 0)
            assert desk.client_ids() == [client_order_id(SYMBOL, START, "open")]   # at once, not next bar
            assert [m.side for m in out if isinstance(m, Fill)] == ["BUY"] and t.portfolio.direction == 1
            crash = START + INTERVAL
            out = t.on_bar(make_bar(crash, price, price * 0.9), 1)
            assert desk.client_ids()[-1] == client_order_id(SYMBOL, crash, "kill") and t.portfolio.direction == 0
            assert any(isinstance(m, Decision) and m.reason.startswith("kill switch") for m in out)
            assert [m for m in out if isinstance(m, Equity)][-1].kill_switch
            t.on_prediction(make_prediction(crash, 0.05), 1)
            assert len(desk.orders) == 2                                          # no new entry
        assert float(desk.balances["BTC"]) == pytest.approx(t.broker.dust, abs=1e-12)  # type: ignore[attr-defined]
    finally:
        runtime.close()


def test_live_trader_stops_for_an_ip_ban_with_the_kill_switch_and_trades_again_after_it(
        exchange: tuple[FakeBinance, OrderDesk], tmp_path: Path) -> None:
    from dope.config import TraderConfig
    from dope.messages import Decision, Equity
    from dope.services.trader import BinanceRuntime, TraderService
    from dope.trading.live import SymbolTrader
    from tests.trader_helpers import INTERVAL, START, make_bar, make_prediction

    fake, desk = exchange
    fake.faults.fail_next_rest(418, retry_after=30, path="/api/v3/order")
    config = TraderConfig(broker="binance", initial_cash=2_000.0, upper=0.001, lower=-0.001)
    runtime = BinanceRuntime(config, fake.rest_url, CREDS)
    shift = {"ms": 0}

    class Shifted:
        def now_ms(self) -> int:
            return time.time_ns() // 1_000_000 + shift["ms"]

        async def sleep_until(self, time_ms: int) -> None:
            raise AssertionError("not used")

    try:
        runtime.start()
        runtime.client.clock = Shifted()
        with Journal(tmp_path / "j") as journal:
            t = SymbolTrader(SYMBOL, config, None, journal=journal, execute=runtime.execute,
                             make_broker=lambda pf: runtime.broker(SYMBOL, pf, journal, None))
            price = float(desk.last_price(SYMBOL))

            def bar_and_buy(k: int) -> list[Any]:
                out: list[Any] = t.on_bar(make_bar(START + k * INTERVAL, price, price), k)
                out += t.on_prediction(make_prediction(START + k * INTERVAL, 0.01), k)
                return out

            out = bar_and_buy(0)
            decision = [m for m in out if isinstance(m, Decision)][-1]
            assert decision.action == "hold" and decision.reason.startswith("order dropped") and desk.orders == []
            assert t.risk.state.killed and t.risk.state.reason.startswith("exchange halt: Binance banned this IP")
            out = bar_and_buy(1)                                   # during the ban: held, nothing sent
            assert [m for m in out if isinstance(m, Equity)][-1].kill_switch
            assert [m for m in out if isinstance(m, Decision)][-1].reason.startswith("kill switch: exchange halt")
            assert [r.method for r in fake.requests if r.path == "/api/v3/order"] == ["POST"]
            service = SimpleNamespace(traders={SYMBOL: t}, binance=runtime, trade_counters={})
            beat = TraderService.extra_counters(service)  # type: ignore[arg-type]  # what the heartbeat carries
            assert 25 <= beat["alarm.ip_ban_s_left"] <= 30 and beat[f"kill_switch.{SYMBOL}"] == 1
            shift["ms"] += 31_000                                 # the ban is over
            fake.clock.step(31_000)
            t.poll(0)
            assert not t.risk.state.killed and t.risk.state.halted_until_ms == 0
            assert TraderService.extra_counters(service)["alarm.ip_ban_s_left"] == 0  # type: ignore[arg-type]
            bar_and_buy(2)
            assert desk.client_ids() == [client_order_id(SYMBOL, START + 2 * INTERVAL, "open")]
    finally:
        runtime.close()


def test_max_order_age_defaults_to_half_a_bar_and_is_validated() -> None:
    from dope.config import config_from_dict
    from dope.services.trader import max_order_age_ms

    assert max_order_age_ms(config_from_dict({})) == 5_000                       # 10 s bars
    assert max_order_age_ms(config_from_dict({"bars": {"interval": "1m"}})) == 30_000
    assert max_order_age_ms(config_from_dict({"trader": {"max_order_age_ms": 1_500}})) == 1_500
    with pytest.raises(ConfigError, match="max_order_age_ms"):
        config_from_dict({"trader": {"max_order_age_ms": -1}})


def test_an_order_call_that_times_out_is_cancelled_not_left_to_send_later() -> None:
    from dope.services.trader import LoopThread

    ended = threading.Event()

    async def slow_order() -> None:
        try:
            await asyncio.sleep(30)   # e.g. sleeping through a ban, then sending
        finally:
            ended.set()

    thread = LoopThread()
    try:
        with pytest.raises(TimeoutError):
            thread.run(slow_order(), timeout_s=0.1)
        assert ended.wait(2.0)       # cancelled at once, not left running
    finally:
        thread.close()


def test_an_order_call_that_waits_lets_the_trader_heartbeat() -> None:
    """A 429 back-off or an unknown outcome's look-ups keep an order call waiting for seconds: the waiting
    thread calls ``on_wait`` meanwhile (the trader heartbeats from it), and the result still arrives."""
    from dope.services.trader import WAIT_TICK_S, LoopThread

    async def slow_order() -> str:
        await asyncio.sleep(6 * WAIT_TICK_S)
        return "filled"

    thread = LoopThread()
    ticks: list[float] = []
    thread.on_wait = lambda: ticks.append(time.monotonic())
    try:
        assert thread.run(slow_order(), timeout_s=30) == "filled"
    finally:
        thread.close()
    assert len(ticks) >= 4
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 4 * WAIT_TICK_S


def test_a_trader_reconciling_at_its_start_heartbeats_meanwhile(exchange: tuple[FakeBinance, OrderDesk],
                                                                tmp_path: Path) -> None:
    """Restarted after an order with no known outcome, the trader looks it up before it trades, for as long as
    the exchange takes to show it: it heartbeats meanwhile, so the supervisor sees a live process."""
    from dope.config import TraderConfig
    from dope.services.trader import BinanceRuntime, TraderService, journal_path
    from dope.transport.memory import InMemoryBus

    fake, desk = exchange
    config = TraderConfig(broker="binance", state_dir=str(tmp_path), symbols=[SYMBOL])
    cid = client_order_id(SYMBOL, 9, "open")
    desk.inject(OrderFault("late", late_ms=2_000))

    with Journal(journal_path(config, "trader")) as journal:
        assert run(fake, send_and_die(cid), journal=journal).status == 503
    bus = InMemoryBus()
    beats = bus.subscriber(["heartbeat."])
    runtime = BinanceRuntime(config, fake.rest_url, CREDS)
    runtime.start()
    began = time.monotonic()
    service = TraderService("trader", bus.publisher("trader"), [], config, [SYMBOL], heartbeat_ms=200,
                            binance=runtime)
    took = time.monotonic() - began
    try:
        assert desk.client_ids() == [cid] and service.traders[SYMBOL].portfolio.direction == 1
        assert not service.traders[SYMBOL].risk.state.killed   # found, booked: nothing for a human to look at
        heartbeats = []
        while (msg := beats.receive(0)) is not None:
            heartbeats.append(msg)
        times = [beat.event_time for beat in heartbeats]
        assert took >= 1.0 and len(times) >= took, (took, times)
        assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 1_000   # never silent for long
    finally:
        service.close()


def test_a_trader_restarted_during_a_journaled_ban_refuses_to_start(tmp_path: Path) -> None:
    from dope.config import TraderConfig
    from dope.services.trader import journal_path, refuse_during_ban
    from dope.trading.journal import StepRecord
    from dope.trading.risk import RiskState

    config = TraderConfig(broker="binance", state_dir=str(tmp_path))
    refuse_during_ban(config, "trader", now_ms=1_000)             # no journal: nothing to refuse
    with Journal(journal_path(config, "trader")) as journal:
        journal.append(StepRecord(symbol=SYMBOL, open_time=0, close=1.0,
                                  risk=RiskState(killed=True, reason="exchange halt: ban", halted_until_ms=60_000)))
    with pytest.raises(IpBanned, match="59 s more"):
        refuse_during_ban(config, "trader", now_ms=1_000)
    refuse_during_ban(config, "trader", now_ms=60_000)            # the ban is over: start
