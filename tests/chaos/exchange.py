"""The fake Binance the chaos stack's trader sends its orders to, and a seeded injector of order-path faults.

Faults (one at a time, at seeded random moments): HTTP 403 (WAF), 500/502/503, 429 with and
without ``Retry-After``, 418 with a short ``Retry-After``, an order executed but answered 503
(unknown outcome), and an order executed whose answer never comes in time (a client timeout).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dope.trading.journal import fold, read_journal
from tests.fakes.binance import FakeBinance, FakeConfig, run_in_thread
from tests.fakes.binance_orders import TEST_API_KEY, TEST_SECRET, OrderDesk

ORDER_PATH = "/api/v3/order"
FAULTS = ("403", "500", "502", "503", "429", "429-no-retry-after", "418", "executed-then-503", "timeout")
BALANCES = {"USDT": 1_000_000.0, "BTC": 5.0, "ETH": 50.0}
CREDENTIALS = {"BINANCE_API_KEY": TEST_API_KEY, "BINANCE_API_SECRET": TEST_SECRET}


@dataclass
class Exchange:
    """The fake exchange with its order desk; ``hang_next`` orders execute, then the answer stalls ``hang_s``."""

    fake: FakeBinance
    desk: OrderDesk
    hang_s: float
    hang_next: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install_hang(self) -> None:
        """Wrap the new-order route: an order flagged to hang executes, then blocks past the client's timeout."""
        weight, handler = self.fake.routes[("POST", ORDER_PATH)]

        def new_order(ctx: Any, params: Any) -> tuple[int, Any]:
            answer: tuple[int, Any] = handler(ctx, params)
            with self.lock:
                hang, self.hang_next = self.hang_next > 0, max(0, self.hang_next - 1)
            if hang:
                time.sleep(self.hang_s)
            return answer

        self.fake.routes[("POST", ORDER_PATH)] = (weight, new_order)

    def inject(self, kind: str) -> None:
        """Make the next order request meet fault ``kind`` (one of ``FAULTS``)."""
        plan = self.fake.faults
        if kind == "timeout":
            with self.lock:
                self.hang_next += 1
        elif kind == "executed-then-503":
            self.desk.execute_then_fail(1)
        elif kind == "429":
            plan.fail_next_rest(429, retry_after=1, path=ORDER_PATH)
        elif kind == "429-no-retry-after":
            plan.fail_next_rest(429, path=ORDER_PATH)
        elif kind == "418":
            plan.fail_next_rest(418, retry_after=2, path=ORDER_PATH)
        else:
            plan.fail_next_rest(int(kind), path=ORDER_PATH)
        self.injected[kind] += 1

    def order_figures(self, journal: Path) -> dict[str, int]:
        """Orders executed, doubled (a client order id executed more than once), resent, and not booked."""
        executed = Counter(o.client_order_id for o in self.desk.orders)
        attempts = Counter(a.get("newClientOrderId", "") for a in self.desk.attempts)
        booked: set[str] = set()
        for history in fold(read_journal(journal, repair=False)).values():
            booked |= history.finished_orders
        return {"orders": len(self.desk.orders), "doubled": sum(n - 1 for n in executed.values()),
                "resent": sum(n - 1 for n in attempts.values()),
                "unbooked": sum(1 for cid in executed if cid not in booked),
                "faults": sum(self.injected.values()), "faults_met": self.faults_met()}

    def faults_met(self) -> int:
        """Order requests answered with an injected status, and orders whose answer stalled past the timeout."""
        statuses = {403, 418, 429, 500, 502, 503}
        answered = sum(1 for r in list(self.fake.requests) if r.path == ORDER_PATH and r.status in statuses)
        with self.lock:
            return answered + self.injected["timeout"] - self.hang_next


@contextmanager
def running_exchange(hang_s: float) -> Iterator[Exchange]:
    """A fake Binance (real HTTP on 127.0.0.1) with an order desk, served from a thread."""
    fake = FakeBinance(config=FakeConfig(speed=1.0))
    desk = OrderDesk.install(fake, balances=BALANCES)
    exchange = Exchange(fake, desk, hang_s)
    exchange.install_hang()
    with run_in_thread(fake):
        yield exchange


class FaultInjector(threading.Thread):
    """Every ``period_s`` (x 0.5-1.5, seeded) one fault of ``FAULTS``, round robin over a seeded shuffle."""

    def __init__(self, exchange: Exchange, period_s: float, seed: int) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.exchange, self.period_s = exchange, period_s
        self.rng = random.Random(seed)
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            order = list(FAULTS)
            self.rng.shuffle(order)
            for kind in order:
                if self.stop.wait(self.period_s * self.rng.uniform(0.5, 1.5)):
                    return
                self.exchange.inject(kind)
