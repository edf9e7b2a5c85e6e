"""A fake running system for the dashboard tests: real ZeroMQ publishers named like DOPE's services,
the dashboard as a real process, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dope.messages import Bar, Equity, Fill, Prediction, Score
from dope.transport import ZmqPublisher

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
HEARTBEAT_MS = 200
START_MS = 1_723_161_250_000


def require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup-browser installs it)")


class FakeSystem:
    """Publishers for collector, a model, the rendezvous and the trader; one ``step`` = one bar per symbol."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.step_count = 0
        self.publishers = {name: ZmqPublisher("tcp://127.0.0.1:*", name, heartbeat_ms=HEARTBEAT_MS)
                           for name in ("collector", "model-rf", "rendezvous", "trader")}

    @property
    def endpoints(self) -> list[str]:
        return [pub.endpoint for pub in self.publishers.values()]

    def heartbeats(self) -> None:
        for pub in self.publishers.values():
            if not pub.closed:
                pub.heartbeat({"published": self.step_count})

    def step(self, *, fill: str | None = None) -> None:
        """Publish one bar (and its score, prediction, equity) for every symbol; optionally a fill."""
        open_time = START_MS + self.step_count * 10_000
        for i, symbol in enumerate(self.symbols):
            price = 100.0 * (i + 1) * (1 + 0.01 * math.sin(self.step_count / 5))
            self.publishers["collector"].publish(_bar(symbol, open_time, price))
            self._publish("model-rf", Score(symbol=symbol, event_time=open_time + 9_999, open_time=open_time,
                                            model_id="rf-1", model_kind="random_forest", feature_version="v",
                                            prediction=0.001 * math.cos(self.step_count), latency_us=900))
            self._publish("rendezvous", Prediction(symbol=symbol, event_time=open_time + 9_999, open_time=open_time,
                                                   prediction=0.001 * math.cos(self.step_count), model_id="rf-1",
                                                   chosen_by="champion", deadline_ms=50, answered=["rf-1"]))
            self._publish("trader", Equity(symbol=symbol, event_time=open_time + 9_999, open_time=open_time,
                                           cash=0.0, position=1.0, equity=10_000 + self.step_count,
                                           buy_and_hold=10_000 + 2 * self.step_count))
            if fill is not None:
                self._publish("trader", Fill(symbol=symbol, event_time=open_time + 10_000, client_order_id="x",
                                             side=fill, qty=1.0, price=price, fee=0.1, fee_asset="USDT"))
        self.step_count += 1
        self.heartbeats()

    def stop_service(self, name: str) -> None:
        self.publishers[name].close()

    def restart_service(self, name: str, endpoint: str) -> None:
        self.publishers[name] = ZmqPublisher(endpoint, name, heartbeat_ms=HEARTBEAT_MS)

    def _publish(self, name: str, msg: Any) -> None:
        pub = self.publishers[name]
        if not pub.closed:
            pub.publish(msg)

    def close(self) -> None:
        for pub in self.publishers.values():
            if not pub.closed:
                pub.close()


def _bar(symbol: str, open_time: int, price: float) -> Bar:
    return Bar(symbol=symbol, event_time=open_time + 9_999, interval_ms=10_000, open_time=open_time,
               close_time=open_time + 9_999, open=price * 0.999, high=price * 1.002, low=price * 0.997, close=price,
               volume=1.0, quote_volume=price, count=3, taker_buy_volume=0.5, taker_buy_quote_volume=price / 2,
               vwap=price, empty=False, first_trade_id=1, last_trade_id=3)


@contextmanager
def dashboard_process(endpoints: list[str], store: Path, port: int) -> Iterator[str]:
    """``dope dashboard`` as its own process; yields its URL once it serves."""
    env = {**os.environ, "DOPE_STORE__PATH": str(store), "DOPE_COLLECTOR__SYMBOLS": '["BTCUSDT", "ETHUSDT"]',
           "DOPE_SERVICES__DASHBOARD": "tcp://127.0.0.1:*"}
    args = [sys.executable, "-m", "dope.cli", "dashboard", "--port", str(port)]
    for endpoint in endpoints:
        args += ["--endpoint", endpoint]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "DOPE dashboard at" in line, process.stderr.read() if process.stderr else line
        yield line.split(" at ")[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def source_length(page: Any, name: str, column: str = "time") -> int:
    """Rows in the named ColumnDataSource of the page's Bokeh document."""
    return int(page.evaluate(
        "([name, column]) => { const d = Bokeh.documents[0]; const m = d.get_model_by_name(name);"
        " return m ? m.data[column].length : -1 }", [name, column]))


def source_column(page: Any, name: str, column: str) -> list[Any]:
    return list(page.evaluate(
        "([name, column]) => Array.from(Bokeh.documents[0].get_model_by_name(name).data[column])", [name, column]))


def wait_until(predicate: Any, timeout_s: float = 15.0, step: Any = None) -> bool:
    """Poll ``predicate`` (calling ``step`` between polls) until true or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if step is not None:
            step()
        time.sleep(0.1)
    return bool(predicate())
