"""The health monitor: drift alarm with hysteresis, reference reloads, bounded windows, data quality, staleness."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dope.clock import SimulatedClock
from dope.commands.status import format_status
from dope.logs import ProblemCounter
from dope.loop.health import HealthLevels, HealthMonitor, ReferenceLike, retrain_request
from dope.messages import Bar, Features, LateTrades, ModelHealth, Prediction, decode, encode, topic_of
from dope.services.metrics import ServiceMetrics, render_metrics

T0 = 1_723_161_600_000
STEP = 10_000
NAMES = ("ret_1", "vol_10")


@dataclass(frozen=True)
class Reference:
    """The shape of ``Registry.reference(model_id)``."""

    feature_names: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray


def reference(seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    return Reference(NAMES, rng.normal(size=(2_000, 2)), rng.normal(0, 0.001, size=2_000))


def features(i: int, values: list[float], symbol: str = "BTCUSDT") -> Features:
    return Features(symbol=symbol, event_time=T0 + i * STEP + STEP - 1, open_time=T0 + i * STEP,
                    feature_set="default", feature_version="v", values=values)


def bar(i: int, *, empty: bool = False, symbol: str = "BTCUSDT") -> Bar:
    t = T0 + i * STEP
    return Bar(symbol=symbol, event_time=t + STEP - 1, interval_ms=STEP, open_time=t, close_time=t + STEP - 1,
               open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0 if empty else 1.0, quote_volume=1.0, count=1,
               taker_buy_volume=0.0, taker_buy_quote_volume=0.0, vwap=1.0, empty=empty, first_trade_id=1,
               last_trade_id=1)


class Roles:
    def __init__(self, champion: str | None = "m1") -> None:
        self.champion = champion
        self.loads: list[str] = []

    def load(self, model_id: str) -> ReferenceLike:
        self.loads.append(model_id)
        if model_id == "broken":
            raise ValueError("no reference.npz")
        return reference()


def monitor(roles: Roles, window: int = 200, every: int = 20, clock: SimulatedClock | None = None) -> HealthMonitor:
    return HealthMonitor(HealthLevels(0.25, 0.25, window, every), lambda: roles.champion, roles.load,
                         ProblemCounter(logging.getLogger("test")), clock=clock, source="decoy")


def feed(mon: HealthMonitor, rows: np.ndarray, start: int = 0) -> list[ModelHealth]:
    out: list[ModelHealth] = []
    for i, row in enumerate(rows):
        out += mon.on_features(features(start + i, list(row)))
    return out


def test_alarm_raises_after_a_shift_not_before_and_clears_with_hysteresis() -> None:
    roles = Roles()
    mon = monitor(roles)
    rng = np.random.default_rng(1)
    before = feed(mon, rng.normal(size=(400, 2)))
    assert len(before) == 11 and not any(m.alarm for m in before)  # checks at 200, 220, ..., 400
    assert before[-1].model_id == "m1" and before[-1].feature_names == list(NAMES)
    assert max(before[-1].psi) < 0.1 and mon.counters()["health.drift_alarm"] == 0
    shifted = rng.normal(size=(200, 2))
    shifted[:, 1] += 1.5
    after = feed(mon, shifted, 400)
    first = next(i for i, m in enumerate(after) if m.alarm)
    assert 0 < first < len(after) - 1  # once enough of the window has moved
    raised = after[first]
    assert raised.reason.startswith(("psi vol_10", "ks vol_10")) and raised.alarm_since == raised.event_time
    assert all(m.alarm_since == raised.alarm_since for m in after[first:])
    counters = mon.counters()
    assert counters["health.drift_alarm"] == 1 and counters["health.alarms_raised"] == 1
    assert counters["health.max_psi_milli"] > 250
    assert retrain_request(after[-1]) == (f"drift on BTCUSDT (m1): {after[-1].reason}", raised.alarm_since)
    # back to the reference distribution: the alarm clears only once below 0.8 of the levels
    back = feed(mon, rng.normal(size=(200, 2)), 600)
    cleared = next(i for i, m in enumerate(back) if not m.alarm)
    assert all(max(max(m.psi) / 0.25, max(m.ks) / 0.25) < 0.8 for m in back[cleared:cleared + 1])
    assert any(max(max(m.psi) / 0.25, max(m.ks) / 0.25) < 1 for m in back[:cleared])  # hysteresis held it
    assert retrain_request(back[-1]) is None and mon.counters()["health.alarms_raised"] == 1


def test_prediction_drift_of_the_champion_only() -> None:
    roles = Roles()
    mon = monitor(roles, window=100, every=100)
    rng = np.random.default_rng(2)
    for i in range(100):
        mon.on_prediction(Prediction(symbol="BTCUSDT", event_time=T0 + i, open_time=T0, prediction=0.01,
                                     model_id="m1", chosen_by="champion", deadline_ms=50))
        mon.on_prediction(Prediction(symbol="BTCUSDT", event_time=T0 + i, open_time=T0, prediction=0.0,
                                     model_id="other", chosen_by="fallback", deadline_ms=50))
    [msg] = feed(mon, rng.normal(size=(100, 2)))
    assert msg.prediction_ks == pytest.approx(1.0) and msg.prediction_psi is not None and msg.prediction_psi > 1
    assert msg.alarm and msg.reason.startswith("prediction")


def test_windows_are_bounded() -> None:
    mon = monitor(Roles(), window=50, every=10)
    feed(mon, np.zeros((500, 2)))
    for i in range(500):
        mon.on_bar(bar(i))
    state = mon.symbols["BTCUSDT"]
    assert len(state.vectors) == 50 and len(state.bars) == 50


def test_reference_follows_the_champion_and_failures_are_counted() -> None:
    roles = Roles(None)
    mon = monitor(roles, window=20, every=20)
    rows = np.random.default_rng(3).normal(size=(20, 2))
    [msg] = feed(mon, rows)
    assert msg.model_id == "" and msg.psi == [] and mon.counters()["health.no_reference"] == 1
    roles.champion = "m1"
    [msg] = feed(mon, rows, 20)
    assert msg.model_id == "m1" and len(msg.psi) == 2 and roles.loads == ["m1"]
    feed(mon, rows, 40)
    assert roles.loads == ["m1"]  # loaded once per champion
    roles.champion = "broken"
    [msg] = feed(mon, rows, 60)
    assert msg.model_id == "broken" and msg.psi == [] and mon.problems.counts["health_reference"] == 1
    roles.champion = "m1"
    [msg] = feed(mon, np.zeros((20, 3)), 80)  # another feature set: the window restarts, nothing measured
    assert msg.psi == [] and mon.problems.counts["health_mismatch"] == 2


def test_gaps_empty_bars_late_trades() -> None:
    mon = monitor(Roles(), window=100)
    for i in [0, 1, 2, 5, 6, 7, 8, 9]:  # 3 and 4 missing
        mon.on_bar(bar(i, empty=i in (6, 7)))
    mon.on_bar(bar(9))  # a repeat is not a bar more
    mon.on_late_trades(LateTrades(symbol="BTCUSDT", event_time=T0, interval_ms=STEP, bar_open_time=T0, count=4,
                                  volume=1.0))
    msg = mon.report("BTCUSDT", T0)
    assert msg.gap_rate == pytest.approx(2 / 10) and msg.empty_rate == pytest.approx(2 / 8)
    assert msg.late_trades == 4
    counters = mon.counters()
    assert (counters["health.gaps"], counters["health.empty_bars"], counters["health.late_trades"]) == (2, 2, 4)


def test_stale_in_event_time_when_other_symbols_move_on() -> None:
    mon = monitor(Roles())
    mon.on_bar(bar(0, symbol="ETHUSDT"))
    changes = []
    for i in range(6):
        changes += mon.on_bar(bar(i))
    assert [(m.symbol, m.stale) for m in changes] == [("ETHUSDT", True)]  # 4 intervals behind BTCUSDT
    assert mon.counters()["health.stale"] == 1
    changes = mon.on_bar(bar(6, symbol="ETHUSDT"))
    assert [(m.symbol, m.stale) for m in changes] == [("ETHUSDT", False)]


def test_stale_by_the_wall_clock_while_live() -> None:
    clock = SimulatedClock(T0 + STEP)
    mon = monitor(Roles(), clock=clock)
    mon.on_bar(bar(0))
    clock.advance_to(T0 + STEP - 1 + 3 * STEP)
    assert mon.tick() == []
    clock.advance_to(T0 + STEP + 3 * STEP)
    [msg] = mon.tick()
    assert msg.stale and msg.symbol == "BTCUSDT" and mon.tick() == []


def test_counters_reach_dope_status_and_prometheus() -> None:
    mon = monitor(Roles())
    shifted = np.random.default_rng(4).normal(size=(200, 2)) + [0.0, 2.0]
    feed(mon, shifted)
    counters = {"handled": 200, **mon.counters()}
    status = {"updated_ms": T0, "services": {"decoy": {
        "state": "running", "up": True, "heartbeat_age_s": 0.2, "lag_s": 0.0, "throughput": 1.0, "restarts": 0,
        "pid": 7, "counters": counters}}}
    line = format_status(status, T0).splitlines()[-1]
    assert line.startswith("  model health (decoy): DRIFT ALARM, max PSI ") and "gaps 0" in line
    text = render_metrics([ServiceMetrics("decoy", True, 0.2, 0, 1.0, counters)])
    samples = {s.labels["counter"]: s.value for f in text_string_to_metric_families(text)
               if f.name == "dope_service_counter" for s in f.samples}
    assert samples["health.drift_alarm"] == 1 and samples["health.max_psi_milli"] > 250


def test_model_health_travels_on_its_own_topic() -> None:
    mon = monitor(Roles(), window=20, every=20)
    [msg] = feed(mon, np.random.default_rng(5).normal(size=(20, 2)))
    assert topic_of(msg) == "health.BTCUSDT" and decode(encode(msg)) == msg
    assert msg.source == "decoy" and msg.drift_psi == 0.25 and msg.window == 20


def test_nonfinite_values_are_counted_once_and_left_out() -> None:
    mon = monitor(Roles(), window=100, every=50)
    rows = np.random.default_rng(6).normal(size=(150, 2))
    rows[10, 0], rows[60, 1] = np.nan, np.inf
    reports = feed(mon, rows)
    assert [m.nonfinite for m in reports] == [2, 2]  # each value once, though it stays in the window
    assert all(np.isfinite(m.psi).all() and np.isfinite(m.ks).all() for m in reports)
    assert mon.counters()["health.nonfinite"] == 2
