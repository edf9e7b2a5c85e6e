"""The decoy's health monitor as a real process over ZeroMQ: features whose distribution shifts raise the
drift alarm after the shift and not before; ``health.<symbol>`` messages and heartbeat counters say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dope.messages import AnyMessage, Bar, Features, Heartbeat, LateTrades, ModelHealth, Prediction
from dope.models import make_model
from dope.models.registry import Reference, Registry
from dope.transport import ZmqPublisher, ZmqSubscriber

REPO = Path(__file__).resolve().parents[2]
T0 = 1_723_161_600_000
IV = 10_000
WINDOW, EVERY, SHIFT_AT, TOTAL = 100, 20, 200, 300
MISSING = {250, 251}  # bars never published: a gap of two
EMPTY = {260}


@dataclass(frozen=True)
class TwoFeatures:
    """The feature set the published vectors claim to be."""

    name: str = "default"
    version: str = "v"
    names: tuple[str, ...] = ("ret_1", "vol_10")


def save_champion_reference(registry_root: Path, seed: int) -> str:
    """A registered champion (a ridge on two features) with its reference sample (predictions drawn like the
    ones published below); its id."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2_000, 2))
    model = make_model("ridge").fit(X, X @ np.array([1e-4, -1e-4]) + rng.normal(0, 0.001, size=2_000))
    registry = Registry(registry_root)
    model_id = registry.register(model, feature_set=TwoFeatures(), symbol="BTCUSDT", interval_ms=IV,
                                 train_start_ms=T0 - 2_000 * IV, train_end_ms=T0,
                                 reference=Reference(TwoFeatures().names, X, rng.normal(0, 0.001, size=2_000)))
    registry.promote(model_id, "champion")
    return model_id


def write_config(tmp_path: Path, pubs: dict[str, ZmqPublisher], out_endpoint: str) -> Path:
    path = tmp_path / "dope.toml"
    path.write_text(f"""
[store]
path = "{tmp_path / 'store'}"
[registry]
path = "{tmp_path / 'registry'}"
[bus]
heartbeat_ms = 100
[services]
collector = "{pubs['collector'].endpoint}"
featurizer = "{pubs['featurizer'].endpoint}"
rendezvous = "{pubs['rendezvous'].endpoint}"
decoy = "{out_endpoint}"
[loop]
drift_window = {WINDOW}
drift_every = {EVERY}
""", encoding="utf-8")
    return path


def publish_market(pubs: dict[str, ZmqPublisher], seed: int, champion: str) -> None:
    """``TOTAL`` bars with their feature vector and the champion's prediction; ``vol_10`` shifts by 2 sd at
    ``SHIFT_AT``."""
    rng = np.random.default_rng(seed)
    for i in range(TOTAL):
        t = T0 + i * IV
        values = rng.normal(size=2) + (np.array([0.0, 2.0]) if i >= SHIFT_AT else 0.0)
        if i not in MISSING:
            pubs["collector"].publish(bar(t, i in EMPTY))
        pubs["featurizer"].publish(Features(symbol="BTCUSDT", event_time=t + IV - 1, open_time=t,
                                            feature_set="default", feature_version="v", values=values.tolist()))
        pubs["rendezvous"].publish(Prediction(symbol="BTCUSDT", event_time=t + IV - 1, open_time=t,
                                              prediction=float(rng.normal(0, 0.001)), model_id=champion,
                                              chosen_by="champion", deadline_ms=50))
        if i == 10:
            pubs["collector"].publish(LateTrades(symbol="BTCUSDT", event_time=t + IV + 5, interval_ms=IV,
                                                 bar_open_time=t, count=3, volume=0.5))
        if i % 50 == 0:
            time.sleep(0.05)  # a live-like pace: far below any high-water mark


def bar(t: int, empty: bool) -> Bar:
    return Bar(symbol="BTCUSDT", event_time=t + IV - 1, interval_ms=IV, open_time=t, close_time=t + IV - 1,
               open=100.0, high=100.0, low=100.0, close=100.0, volume=0.0 if empty else 1.0, quote_volume=100.0,
               count=0 if empty else 1, taker_buy_volume=0.0, taker_buy_quote_volume=0.0, vwap=100.0, empty=empty,
               first_trade_id=-1 if empty else 1, last_trade_id=-1 if empty else 1)


def collect(sub: ZmqSubscriber, timeout_s: float, done: object) -> list[AnyMessage]:
    got: list[AnyMessage] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.receive(timeout_ms=50)
        if msg is not None:
            got.append(msg)
            if done(msg):  # type: ignore[operator]
                break
    return got


@pytest.mark.timeout(60)
def test_decoy_process_raises_the_drift_alarm_after_the_shift(tmp_path: Path) -> None:
    champion = save_champion_reference(tmp_path / "registry", seed=0)
    pubs = {name: ZmqPublisher("tcp://127.0.0.1:0", name, linger_ms=0)
            for name in ("collector", "featurizer", "rendezvous")}
    out_endpoint = f"ipc://{tmp_path / 'decoy.ipc'}"
    proc = subprocess.Popen([sys.executable, "-m", "dope.services.decoy", "--config",
                             str(write_config(tmp_path, pubs, out_endpoint))], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stderr=subprocess.PIPE, text=True)
    sub = ZmqSubscriber([out_endpoint], ["health.", "heartbeat."])
    try:
        for pub in pubs.values():
            assert pub.wait_for_subscriptions(1, timeout_ms=20_000), f"{pub.name} never got the decoy"
        assert isinstance(sub.receive(timeout_ms=20_000), Heartbeat)
        publish_market(pubs, seed=1, champion=champion)
        got = collect(sub, 30, lambda m: isinstance(m, Heartbeat) and m.counters.get("health.bars") == TOTAL - 2
                      and m.counters.get("archived", 0) + m.counters.get("pending", 0) == TOTAL)
        for i in range(TOTAL, TOTAL + EVERY):  # one more check, now that every bar is in
            pubs["featurizer"].publish(Features(symbol="BTCUSDT", event_time=T0 + i * IV + IV - 1,
                                                open_time=T0 + i * IV, feature_set="default", feature_version="v",
                                                values=[0.0, 2.0]))
        got += collect(sub, 10, lambda m: isinstance(m, ModelHealth))
        got += collect(sub, 10, lambda m: isinstance(m, Heartbeat))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        for pub in pubs.values():
            pub.close()
    reports = [m for m in got if isinstance(m, ModelHealth)]
    bar_of = {m.event_time: (m.event_time - T0) // IV for m in reports}
    assert [bar_of[m.event_time] + 1 for m in reports] == list(range(WINDOW, TOTAL + EVERY + 1, EVERY))
    before = [m for m in reports if bar_of[m.event_time] < SHIFT_AT]
    after = [m for m in reports if bar_of[m.event_time] >= SHIFT_AT]
    assert before and not any(m.alarm for m in before)
    assert all(max(m.psi) < 0.25 and max(m.ks) < 0.25 for m in before)
    raised = next(m for m in after if m.alarm)
    assert bar_of[raised.event_time] < SHIFT_AT + 3 * EVERY  # the bound: within 60 bars of the shift
    assert "vol_10" in raised.reason and raised.model_id == champion and after[-1].alarm
    assert raised.feature_names == ["ret_1", "vol_10"] and raised.prediction_ks is not None
    assert raised.prediction_ks < 0.25  # the predictions did not shift
    last = after[-1]
    assert last.late_trades == 3 and not last.stale
    assert last.gap_rate == pytest.approx(2 / (WINDOW + 2)) and last.empty_rate == pytest.approx(1 / WINDOW)
    beat = got[-1]
    assert isinstance(beat, Heartbeat)
    counters = beat.counters
    assert counters["health.drift_alarm"] == 1 and counters["health.alarms_raised"] == 1
    assert counters["health.max_psi_milli"] > 250 and counters["health.max_ks_milli"] > 250
    assert (counters["health.gaps"], counters["health.empty_bars"], counters["health.late_trades"]) == (2, 1, 3)
    assert counters["health.no_reference"] == 0 and counters["health_reports"] == len(reports)
