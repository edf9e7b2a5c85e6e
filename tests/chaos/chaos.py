"""One chaos run: ``dope up`` on the synthetic market, trading through a faulty fake Binance, while a seeded
killer SIGKILLs every service in turn (sometimes two at the same moment); then the figures.

    figures = run_chaos(work, ChaosSettings(minutes=2, kill_period_s=5))
    print(figures.table()); figures.failures()   # the targets that were missed, in words
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dope.services.base import load_service_config
from dope.store import BarStore
from dope.types import DAY_MS
from tests.chaos.exchange import CREDENTIALS, FaultInjector, running_exchange
from tests.chaos.measures import (
    BarFigures,
    RssSample,
    compare_bars,
    decisions_lost,
    percentile,
    rss_growth_mb_per_h,
    rss_period_peaks_mb,
    write_rss_samples,
)
from tests.chaos.stack import (
    DecisionLog,
    StackSettings,
    start_up,
    status_or_none,
    stop_up,
    trader_endpoint,
    wait_all_running,
    write_stack_config,
)

HEALTHY_P99_S = 5.0
RSS_MB_PER_H = 20.0


@dataclass(frozen=True)
class ChaosSettings:
    """How long, how often, how hard."""

    minutes: float = 30.0
    kill_period_s: float = 30.0
    """Mean time between kills (each x 0.5-1.5, seeded); ``math.inf``: no kill (a soak)."""
    pair_share: float = 0.25
    """Share of kills that take two services down at the same moment."""
    fault_period_s: float = 10.0
    """Mean time between two order-path faults of the fake exchange."""
    seed: int = 12
    settle_s: float = 20.0
    """No kill in the last ``settle_s`` of the run (every kill has time to heal)."""
    rss_period_s: float = 2.0
    rss_warmup_s: float = 60.0
    """Left out at the start of every process lifetime before the memory slope is fitted."""
    check_memory: bool = True
    """Hold the memory target (only a soak without kills: lifetimes of many minutes, warm-up left out)."""
    start_timeout_s: float = 240.0
    stack: StackSettings = field(default_factory=StackSettings)


@dataclass
class Kill:
    """One SIGKILL and how long its service took to be healthy again (and to handle new events)."""

    service: str
    pid: int
    at: float
    last_event_ms: int
    healthy_s: float = math.inf
    working_s: float = math.inf


@dataclass(eq=False)
class Monitor(threading.Thread):
    """Polls ``dope status --json`` (the run dir's status.json): resolves kills, samples RSS per service pid."""

    run_dir: Path
    settings: ChaosSettings
    kills: list[Kill] = field(default_factory=list)
    samples: list[RssSample] = field(default_factory=list)
    latest: dict[str, Any] = field(default_factory=dict)
    silences: dict[str, float] = field(default_factory=dict)
    """Per service, the longest heartbeat age seen of a running process nobody killed."""
    halt: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name="chaos-monitor", daemon=True)

    def run(self) -> None:
        next_sample = 0.0
        while not self.halt.wait(0.05):
            status = status_or_none(self.run_dir)
            if status is None:
                continue
            self.latest = status
            now = time.monotonic()
            for kill in self.kills:
                _resolve(kill, status["services"].get(kill.service, {}), now)
            self._note_silences(status)
            if now >= next_sample:
                next_sample = now + self.settings.rss_period_s
                self.samples.extend(_rss_samples(status))

    def _note_silences(self, status: dict[str, Any]) -> None:
        killed = {k.pid for k in self.kills}
        for name, service in status["services"].items():
            age = service.get("heartbeat_age_s")
            if service.get("state") == "running" and service.get("pid") not in killed and age is not None:
                self.silences[name] = max(self.silences.get(name, 0.0), float(age))


def _resolve(kill: Kill, service: dict[str, Any], now: float) -> None:
    back = service.get("pid") not in (None, kill.pid) and service.get("state") == "running" and service.get("up")
    if not back:
        return
    if math.isinf(kill.healthy_s):
        kill.healthy_s = now - kill.at
    if math.isinf(kill.working_s) and _working(service.get("counters", {}), kill.last_event_ms):
        kill.working_s = now - kill.at


def _working(counters: dict[str, int], last_event_ms: int) -> bool:
    """The restarted process handled an event newer than its predecessor's last (the collector: made a bar)."""
    if "last_event_ms" in counters:
        return int(counters["last_event_ms"]) > last_event_ms
    return int(counters.get("bars", 0)) > 0


def _rss_samples(status: dict[str, Any]) -> list[RssSample]:
    out = []
    now = time.time()
    for name, service in status["services"].items():
        pid = service.get("pid")
        if pid is None or service.get("state") != "running":
            continue
        try:
            proc = psutil.Process(pid)
            rss = proc.memory_info().rss
        except psutil.Error:
            continue
        if rss > 0:  # 0: a zombie (exited, not yet reaped)
            out.append(RssSample(name, pid, now - proc.create_time(), now, rss))
    return out


class Killer:
    """Seeded SIGKILLs: services in a shuffled round robin (each one in every round), sometimes two at once."""

    def __init__(self, monitor: Monitor, settings: ChaosSettings) -> None:
        self.monitor, self.settings = monitor, settings
        self.rng = random.Random(settings.seed)
        self.queue: list[str] = []

    def next_targets(self, services: list[str]) -> list[str]:
        count = 2 if self.rng.random() < self.settings.pair_share else 1
        targets: list[str] = []
        while len(targets) < count:
            if not self.queue:
                self.queue = sorted(services)
                self.rng.shuffle(self.queue)
            name = self.queue.pop()
            if name not in targets:
                targets.append(name)
        return targets

    def kill(self, names: list[str]) -> None:
        """SIGKILL ``names`` at the same moment (those running; the others are skipped)."""
        services = self.monitor.latest.get("services", {})
        at = time.monotonic()
        for name in names:
            service = services.get(name, {})
            pid = service.get("pid")
            if pid is None or service.get("state") != "running":
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            counters = service.get("counters", {})
            kill = Kill(name, pid, at, int(counters.get("last_event_ms", 0)))
            if not ("last_event_ms" in counters or "bars" in counters):
                kill.working_s = math.nan  # a service without event times (the dashboard): not measured
            self.monitor.kills.append(kill)

    def run_until(self, end: float) -> None:
        last_kill = end - self.settings.settle_s
        while True:
            wait = self.settings.kill_period_s * self.rng.uniform(0.5, 1.5)
            if time.monotonic() + wait > last_kill:
                break
            time.sleep(wait)
            self.kill(self.next_targets(list(self.monitor.latest.get("services", {}))))
        time.sleep(max(0.0, end - time.monotonic()))


@dataclass
class Figures:
    """Everything a chaos run measured."""

    settings: ChaosSettings
    minutes: float
    bars: BarFigures
    decisions: tuple[int, int]
    predicted: tuple[int, int]
    """Decisions seen on the bus, and how many of them had a prediction (reported, no target)."""
    orders: dict[str, int]
    kills: list[Kill]
    rss: dict[str, tuple[float, float]]
    rss_late: dict[str, tuple[float, float]]
    """The slope over the second half of each lifetime after its warm-up (a leak keeps it, a warm-up not)."""
    silences: dict[str, float]
    up_exit: int
    rss_day_peaks: dict[str, list[float]] = field(default_factory=dict)
    """Per service, the highest RSS (MB) in each whole market day of wall time (a soak's test of a daily cycle)."""

    def healthy(self, service: str | None = None) -> list[float]:
        return [k.healthy_s for k in self.kills if service in (None, k.service)]

    def failures(self) -> list[str]:
        """Every target this run missed, each in words (empty: every target held)."""
        return self.broken() + self.missed_targets()

    def broken(self) -> list[str]:
        """What must never happen, whatever the machine: a bar lost or altered, an order executed twice."""
        out = []
        if self.bars.lost or self.bars.different or self.bars.reference == 0:
            out.append(f"bars: {self.bars.lost} lost, {self.bars.different} different of {self.bars.reference}")
        if self.orders["doubled"]:
            out.append(f"orders: {self.orders['doubled']} executed twice")
        if self.decisions[0] == 0:
            out.append("decisions: the trader decided nothing")
        return out

    def missed_targets(self) -> list[str]:
        """The service-level targets this run missed (reported in docs/reliability.md): decisions lost,
        kill to healthy p99, memory growth."""
        out = []
        if self.decisions[1]:
            out.append(f"decisions: {self.decisions[1]} of {self.decisions[0]} bars without a decision")
        p99 = percentile(self.healthy(), 99)
        if self.kills and not p99 <= HEALTHY_P99_S:
            slow = sorted(((k.healthy_s, k.service) for k in self.kills), reverse=True)[:5]
            out.append(f"kill to healthy p99 {p99:.1f} s > {HEALTHY_P99_S} s; slowest {slow}")
        if self.settings.check_memory:
            grown = {s: round(g, 1) for s, g in self.memory_growth().items() if not g <= RSS_MB_PER_H}
            if grown:
                out.append(f"resident memory growth over {RSS_MB_PER_H} MB/h: {grown}")
        return out

    def memory_growth(self) -> dict[str, float]:
        """MB/h per service: from the first to the last whole market day's peak when the run holds two or
        more (a daily cycle is no growth), else the least-squares slope after the warm-up."""
        day_h = DAY_MS / 3_600_000 / self.settings.stack.speed
        out = {s: g for s, (g, _) in self.rss.items()}
        for service, peaks in self.rss_day_peaks.items():
            if len(peaks) >= 2:
                out[service] = (peaks[-1] - peaks[0]) / ((len(peaks) - 1) * day_h)
        return out

    def table(self) -> str:
        from tests.chaos.report import figures_table

        return figures_table(self)


def _write_kills(path: Path, kills: list[Kill], began: float) -> None:
    """Every kill (seconds from the start of the chaos, service, pid, recovery times; null = never) as JSON."""
    def seconds(value: float) -> float | None:
        return None if math.isinf(value) or math.isnan(value) else round(value, 3)

    path.write_text(json.dumps([{"at_s": round(k.at - began, 3), "service": k.service, "pid": k.pid,
                                 "healthy_s": seconds(k.healthy_s), "new_events_s": seconds(k.working_s)}
                                for k in kills], indent=1))


def run_chaos(work: Path, settings: ChaosSettings) -> Figures:
    """Run the stack under chaos for ``settings.minutes`` (after it is up), stop it, measure."""
    run_dir, log = work / "run", work / "up.log"
    with running_exchange(hang_s=settings.stack.request_timeout_ms / 1000 + 1.0) as exchange:
        config_path = write_stack_config(work, settings.stack, exchange.fake.rest_url)
        monitor = Monitor(run_dir, settings)
        faults = FaultInjector(exchange, settings.fault_period_s, settings.seed)
        proc = start_up(config_path, run_dir, log, CREDENTIALS)
        decisions: DecisionLog | None = None
        try:
            status = wait_all_running(run_dir, proc, log, settings.start_timeout_s)
            config = load_service_config(str(run_dir / "config.json"))
            decisions = DecisionLog(trader_endpoint(run_dir, status), Path(config.trader.state_dir) / "trader.journal")
            monitor.start()
            faults.start()
            began = time.monotonic()
            Killer(monitor, settings).run_until(began + settings.minutes * 60)
            minutes = (time.monotonic() - began) / 60
        finally:
            faults.stop.set()
            monitor.halt.set()  # no sample of a process winding down (a zombie reads 0)
            code = stop_up(proc)
            if decisions is not None:
                decisions.close()
        monitor.join(5)
        orders = exchange.order_figures(Path(config.trader.state_dir) / "trader.journal")
    _write_kills(work / "chaos-kills.json", monitor.kills, began)
    write_rss_samples(work / "chaos-rss.csv", monitor.samples)
    store = BarStore(config.store.path)
    (work / "chaos-decided.json").write_text(json.dumps(sorted(decisions.decided)))
    return Figures(settings, minutes, compare_bars(store, config, work),
                   decisions_lost(store, config.bars.interval_ms, config.collector.symbols, decisions.decided),
                   (len(decisions.tapped), sum(decisions.tapped.values())),
                   orders, monitor.kills, rss_growth_mb_per_h(monitor.samples, settings.rss_warmup_s),
                   rss_growth_mb_per_h(monitor.samples, settings.rss_warmup_s, late_half=True), monitor.silences,
                   code, rss_period_peaks_mb(monitor.samples, DAY_MS / 1000 / settings.stack.speed))
