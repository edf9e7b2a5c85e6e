"""What the dashboard knows: bounded recent history per symbol and the health of every service.

One ``DashboardState`` is shared by the bus feed (a background thread that
writes) and every browser session (which read). Each stored item gets a
global sequence number, so a session asks only for what is new since its last
look. Everything is bounded (``rollover`` items per series), so the dashboard
runs for days without growing. It computes no trading logic: it only keeps
what the services published.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from dope.messages import AnyMessage, Bar, Equity, Fill, Heartbeat, ModelHealth, Prediction, Score

BASE_FIELDS: Final = frozenset({"symbol", "event_time", "seq", "source", "v"})


@dataclass
class ServiceHealth:
    """The last heartbeat of one service, and the rates derived from its counters."""

    name: str
    interval_ms: int
    last_seen_ms: int
    counters: dict[str, int]
    rates: dict[str, float] = field(default_factory=dict)

    def update(self, beat: Heartbeat, now_ms: int) -> None:
        """Take a new heartbeat; rates are counter increases per second since the previous one."""
        elapsed_s = max(now_ms - self.last_seen_ms, 1) / 1000
        self.rates = {name: (value - self.counters.get(name, 0)) / elapsed_s
                      for name, value in beat.counters.items()}
        self.counters, self.last_seen_ms, self.interval_ms = dict(beat.counters), now_ms, beat.interval_ms

    def status(self, now_ms: int, missed_beats: int = 3) -> str:
        """``ok`` while heartbeats arrive, ``late`` after one missed, ``dead`` after ``missed_beats``."""
        age = now_ms - self.last_seen_ms
        if age > missed_beats * self.interval_ms:
            return "dead"
        return "late" if age > 1.5 * self.interval_ms else "ok"


class DashboardState:
    """Thread-safe, bounded store of what the dashboard shows."""

    def __init__(self, rollover: int = 2_000) -> None:
        self.rollover = rollover
        self._lock = threading.Lock()
        self._seq = 0
        self._series: dict[tuple[str, str], deque[tuple[int, AnyMessage]]] = {}
        self.services: dict[str, ServiceHealth] = {}
        self.scorecards: dict[str, dict[str, object]] = {}
        self._model_health: dict[str, ModelHealth] = {}
        self.bus_counters: dict[str, int] = {}
        self.ignored = 0

    @property
    def version(self) -> int:
        """Increases with every stored item: a cheap "anything new?" check."""
        return self._seq

    def symbols(self) -> list[str]:
        with self._lock:
            return sorted({symbol for symbol, kind in self._series if kind == "bar"})

    def ingest(self, msg: AnyMessage, now_ms: int) -> None:
        """Store one message from the bus (``now_ms``: when it arrived, for heartbeat ages)."""
        with self._lock:
            if isinstance(msg, Heartbeat):
                self._heartbeat(msg, now_ms)
            elif type(msg).__struct_config__.tag == "scorecard":
                self.scorecards[str(getattr(msg, "model_id", msg.source))] = _fields(msg)
            elif isinstance(msg, ModelHealth):
                self._model_health[msg.symbol] = msg
                self._seq += 1
            elif isinstance(msg, Bar | Prediction | Score | Fill | Equity):
                self._append(msg)
            else:
                self.ignored += 1

    def ingest_many(self, messages: Iterable[AnyMessage], now_ms: int) -> None:
        for msg in messages:
            self.ingest(msg, now_ms)

    def since(self, symbol: str, kind: str, after: int = 0) -> list[tuple[int, AnyMessage]]:
        """Items of ``(symbol, kind)`` with a sequence number above ``after``, oldest first."""
        with self._lock:
            series = self._series.get((symbol, kind))
            if not series:
                return []
            newer: list[tuple[int, AnyMessage]] = []
            for item in reversed(series):
                if item[0] <= after:
                    break
                newer.append(item)
            return newer[::-1]

    def health_rows(self, now_ms: int) -> list[dict[str, object]]:
        """One row per service: status, heartbeat age, throughput and problem counters."""
        with self._lock:
            return [_health_row(health, now_ms) for _, health in sorted(self.services.items())]

    def model_health(self, symbol: str) -> ModelHealth | None:
        """The last health report of ``symbol`` (the decoy's ``health.<symbol>``), if any."""
        with self._lock:
            return self._model_health.get(symbol)

    def alarms(self) -> list[str]:
        """``service: name=value`` for every heartbeat counter ``alarm.*`` that is not 0 (e.g. an IP ban)."""
        with self._lock:
            return [f"{name}: {key.removeprefix('alarm.')}={value}" for name, health in sorted(self.services.items())
                    for key, value in sorted(health.counters.items()) if key.startswith("alarm.") and value]

    def kill_switch(self) -> bool:
        """True when the trader's last equity report says its kill switch is on."""
        with self._lock:
            latest = [series[-1][1] for (_, kind), series in self._series.items() if kind == "equity" and series]
            return any(isinstance(msg, Equity) and msg.kill_switch for msg in latest)

    def _append(self, msg: AnyMessage) -> None:
        kind = type(msg).__struct_config__.tag
        assert isinstance(kind, str)
        series = self._series.setdefault((msg.symbol, kind), deque(maxlen=self.rollover))
        self._seq += 1
        series.append((self._seq, msg))

    def _heartbeat(self, beat: Heartbeat, now_ms: int) -> None:
        health = self.services.get(beat.service)
        if health is None:
            self.services[beat.service] = ServiceHealth(beat.service, beat.interval_ms, now_ms, dict(beat.counters))
        else:
            health.update(beat, now_ms)
        self._seq += 1


def _fields(msg: AnyMessage) -> dict[str, object]:
    return {k: v for k, v in msgspec.structs.asdict(msg).items() if k not in BASE_FIELDS}


def _health_row(health: ServiceHealth, now_ms: int) -> dict[str, object]:
    counters = health.counters
    problems = sum(v for k, v in counters.items() if k.startswith(("rejected", "bad_", "gaps", "dropped",
                                                                       "malformed", "late")))
    busiest = max(health.rates.values(), default=0.0)
    return {"service": health.name, "status": health.status(now_ms),
            "age_s": round((now_ms - health.last_seen_ms) / 1000, 1), "rate": round(busiest, 1),
            "problems": problems, "counters": ", ".join(f"{k}={v}" for k, v in sorted(counters.items())[:8])}
