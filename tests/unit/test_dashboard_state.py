"""The dashboard's state: bounded series, incremental reads, service health from heartbeats."""

from __future__ import annotations

from dope.dashboard.state import DashboardState
from dope.messages import Equity, Heartbeat, LateTrades
from tests.e2e.dashboard_helpers import _bar


def beat(service: str, counters: dict[str, int], interval_ms: int = 1_000) -> Heartbeat:
    return Heartbeat(symbol="*", event_time=0, service=service, interval_ms=interval_ms, counters=counters)


def test_series_are_bounded_and_read_incrementally() -> None:
    state = DashboardState(rollover=10)
    for i in range(25):
        state.ingest(_bar("BTCUSDT", i * 10_000, 100.0 + i), now_ms=0)
    items = state.since("BTCUSDT", "bar")
    assert len(items) == 10 and items[-1][1].open_time == 240_000
    assert [m.open_time for _, m in state.since("BTCUSDT", "bar", items[-3][0])] == [230_000, 240_000]
    assert state.since("ETHUSDT", "bar") == [] and state.symbols() == ["BTCUSDT"]


def test_health_turns_dead_after_missed_heartbeats_and_back_to_ok() -> None:
    state = DashboardState()
    state.ingest(beat("trader", {"fills": 1}), now_ms=10_000)
    state.ingest(beat("trader", {"fills": 5, "rejected": 2}), now_ms=12_000)
    row = state.health_rows(12_500)[0]
    assert (row["status"], row["rate"], row["problems"]) == ("ok", 2.0, 2)
    assert state.health_rows(14_000)[0]["status"] == "late"
    assert state.health_rows(15_500)[0]["status"] == "dead"
    state.ingest(beat("trader", {"fills": 6}), now_ms=20_000)
    assert state.health_rows(20_100)[0]["status"] == "ok"


def test_kill_switch_follows_the_latest_equity_report_and_unknown_kinds_are_counted() -> None:
    state = DashboardState()
    report = Equity(symbol="X", event_time=1, open_time=0, cash=1.0, position=0.0, equity=1.0, buy_and_hold=1.0)
    state.ingest(report, 0)
    assert not state.kill_switch()
    state.ingest(report.__replace__(kill_switch=True), 0)
    assert state.kill_switch()
    state.ingest(LateTrades(symbol="X", event_time=1, interval_ms=10_000, bar_open_time=0, count=1, volume=1.0), 0)
    assert state.ignored == 1


def test_alarm_counters_of_any_service_are_listed_while_not_zero() -> None:
    state = DashboardState()
    state.ingest(beat("trader", {"alarm.ip_ban_s_left": 259_199, "fills": 3}), now_ms=0)
    state.ingest(beat("collector", {"alarm.other": 0}), now_ms=0)
    assert state.alarms() == ["trader: ip_ban_s_left=259199"]
    state.ingest(beat("trader", {"alarm.ip_ban_s_left": 0}), now_ms=1_000)
    assert state.alarms() == []
