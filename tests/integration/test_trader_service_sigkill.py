"""SIGKILL of a trader process that sends real (fake-exchange) orders: restarted, it restores its
portfolio from the journal, and no order is ever sent twice (checked in the fake Binance's order log)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import tomli_w

from dope.trading.journal import fold, read_journal
from dope.trading.portfolio import Portfolio
from dope.transport import ZmqPublisher
from tests.fakes.binance import FakeBinance, FakeConfig, run_in_thread
from tests.fakes.binance_orders import TEST_API_KEY, TEST_SECRET, OrderDesk
from tests.trader_helpers import INTERVAL, START, make_bar, make_prediction

BARS = 160


def write_config(path: Path, rest_url: str, collector: str, rendezvous: str, state: Path) -> None:
    path.write_text(tomli_w.dumps({
        "bus": {"snapshot": "", "heartbeat_ms": 200, "linger_ms": 0},
        "services": {"collector": collector, "rendezvous": rendezvous, "trader": "tcp://127.0.0.1:0"},
        "trader": {"broker": "binance", "rest_url": rest_url, "symbols": ["BTCUSDT"], "initial_cash": 2_000.0,
                   "upper": 0.001, "lower": -0.001, "state_dir": str(state)}}))


def start_trader(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BINANCE_API_KEY": TEST_API_KEY, "BINANCE_API_SECRET": TEST_SECRET}
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "dope.services.trader", "--config", str(config), "--live",
                                 "--no-catch-up"], env=env, stdout=subprocess.DEVNULL, stderr=err)


class Feed(threading.Thread):
    """Publishes bar i and its prediction every ``period`` s; ``rewind(k)`` re-sends the last k (a replayed resend)."""

    def __init__(self, bars: ZmqPublisher, preds: ZmqPublisher, period: float = 0.03) -> None:
        super().__init__(daemon=True)
        self.bars, self.preds, self.period = bars, preds, period
        self.i = 0
        self.paused = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while self.i < BARS:
            if not self.paused.is_set():
                with self.lock:
                    self._send(self.i)
                    self.i += 1
            time.sleep(self.period)

    def _send(self, i: int) -> None:
        open_time = START + i * INTERVAL
        price = 60_000.0 * (1 + 0.001 * (i % 7))
        self.bars.publish(make_bar(open_time, price, price))
        self.preds.publish(make_prediction(open_time, 0.01 if (i // 3) % 2 == 0 else -0.01))

    def rewind(self, count: int) -> None:
        with self.lock:
            for i in range(max(self.i - count, 0), self.i):
                self._send(i)


@pytest.mark.slow
def test_sigkilled_trader_restores_its_portfolio_and_never_sends_an_order_twice(tmp_path: Path) -> None:
    fake = FakeBinance(config=FakeConfig(speed=1.0))
    desk = OrderDesk.install(fake, balances={"USDT": 10_000.0})
    state, log, cfg = tmp_path / "state", tmp_path / "trader.log", tmp_path / "dope.toml"
    with run_in_thread(fake), ZmqPublisher("tcp://127.0.0.1:0", "collector", linger_ms=0) as bars, \
            ZmqPublisher("tcp://127.0.0.1:0", "rendezvous", linger_ms=0) as preds:
        write_config(cfg, fake.rest_url, bars.endpoint, preds.endpoint, state)
        feed = Feed(bars, preds)
        feed.paused.set()
        process = start_trader(cfg, log)
        kills = 0
        try:
            for target_orders in (4, 9, 15):
                subscribed(feed, 2 * (kills + 1), log)
                feed.rewind(3)  # a restarted trader sees the last bars again: it must not re-send their orders
                feed.paused.clear()
                if not feed.is_alive() and feed.i == 0:
                    feed.start()
                wait_for(lambda n=target_orders: len(desk.orders) >= n, log)
                process.send_signal(signal.SIGKILL)  # mid-run, with no warning
                process.wait(10)
                feed.paused.set()
                kills += 1
                process = start_trader(cfg, log)
            subscribed(feed, 2 * (kills + 1), log)
            feed.rewind(3)
            feed.paused.clear()
            feed.join(30)
            time.sleep(1.0)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0, log.read_text()[-3000:]

    sent = [a["newClientOrderId"] for a in desk.attempts]
    assert len(desk.orders) >= 15
    assert [cid for cid, n in Counter(sent).items() if n > 1] == []       # never sent twice
    assert len(set(desk.client_ids())) == len(desk.orders)

    history = fold(read_journal(state / "trader.journal"))["BTCUSDT"]
    assert history.open_intents == {}
    assert {f for f in history.finished_orders if f.startswith("dope-")} == set(desk.client_ids())
    portfolio = Portfolio(2_000.0)
    for fill in history.fills:
        portfolio.apply_fill(fill)
    assert history.baseline is not None
    expected_btc = history.baseline.amount + portfolio.qty + history.dust
    assert float(desk.balances["BTC"]) == pytest.approx(expected_btc, abs=1e-8)
    assert float(desk.balances["USDT"] - Decimal(8_000)) == pytest.approx(portfolio.cash, abs=1e-6)
    assert "reconciliation" not in log.read_text()


def subscribed(feed: Feed, count: int, log: Path) -> None:
    """Wait (the feed paused: its sockets are ours) until the trader's ``count`` subscriptions reached both publishers."""
    with feed.lock:
        for pub in (feed.bars, feed.preds):
            assert pub.wait_for_subscriptions(count, timeout_ms=30_000), log.read_text()[-3000:]
    time.sleep(0.2)


def wait_for(done: object, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out; trader log:\n{log.read_text()[-3000:]}")
