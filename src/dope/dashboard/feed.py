"""The dashboard's link to the bus: a background thread that subscribes to every service and fills the state.

ZeroMQ reconnects by itself when a publisher restarts, and the subscriber
treats a publisher's new incarnation as a restart, so the dashboard
recovers from a bus or service restart without doing anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Final

from dope.bars.schema import bars_from_frame
from dope.config import DopeConfig
from dope.dashboard.state import DashboardState
from dope.transport import CurveClient, ZmqSubscriber

log = logging.getLogger("dope.dashboard")

TOPICS: Final = ("bar.", "prediction.", "score.", "fill.", "equity.", "heartbeat.", "scorecard.", "health.")


def service_endpoints(config: DopeConfig) -> list[str]:
    """Every endpoint a service of this configuration publishes on (the dashboard listens to all)."""
    services = config.services
    endpoints = [services.collector or config.bus.publish, services.featurizer, services.decoy,
                 services.rendezvous, services.trader, *(d.endpoint for d in config.models.deploy)]
    return list(dict.fromkeys(e.replace("*", "0") for e in endpoints if e and not e.endswith(":*")))


class BusFeed:
    """Receives from the bus in its own thread (zmq sockets never cross threads) into the state."""

    def __init__(self, state: DashboardState, endpoints: Sequence[str], topics: Sequence[str] = TOPICS,
                 curve: CurveClient | None = None, run_id: str = "") -> None:
        self.state, self.endpoints, self.topics, self.curve = state, list(endpoints), list(topics), curve
        self.run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def start(self) -> BusFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with ZmqSubscriber(self.endpoints, self.topics, curve=self.curve, run_id=self.run_id) as subscriber:
            log.info("dashboard listening to %s", ", ".join(self.endpoints))
            while not self._stop.is_set():
                msg = subscriber.receive(timeout_ms=100)
                now_ms = time.time_ns() // 1_000_000
                if msg is not None:
                    self.state.ingest(msg, now_ms)
                self.state.bus_counters = subscriber.stats.as_counters()


def load_history(state: DashboardState, config: DopeConfig) -> int:
    """Recent bars of the collected symbols from the store, so a new page is not empty. Returns the count."""
    from dope.store import BarStore

    store = BarStore(config.store.path)
    interval_ms = config.bars.interval_ms
    loaded = 0
    now_ms = time.time_ns() // 1_000_000
    for symbol in config.collector.symbols:
        last = store.last_bar(symbol, interval_ms)
        if last is None or config.dashboard.history_bars == 0:
            continue
        start = int(last["open_time"]) - (config.dashboard.history_bars - 1) * interval_ms
        frame = store.read_bars(symbol, interval_ms, start_ms=start)
        bars = bars_from_frame(frame, interval_ms)
        state.ingest_many(bars, now_ms)
        loaded += len(bars)
    return loaded
