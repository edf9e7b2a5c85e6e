"""The trainer service in one process, its fits in real child processes, on a real store and registry.

Bars are handed to the service as the collector would publish them (no other service runs: the
checkpoints have no judged model to wait for). What is checked: a retrain point launches a fit of the
bars before it, the registered version becomes the shadow with its lineage audited, the source is held at
each checkpoint (``LoopProgress``), and a fit that fails is audited as a rejection while the service goes on.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from dope.bars import bars_from_frame
from dope.config import DopeConfig, config_from_dict
from dope.features import default_feature_set, training_matrix
from dope.loop.audit import AUDIT_FILE, AuditLog
from dope.market.synthetic import generate_bars
from dope.messages import Bar, LoopProgress, ModelHealth, Prediction, Score
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.trainer import TrainerService
from dope.store import BarStore
from dope.transport import InMemoryBus

INTERVAL = 10_000
START = 1_704_067_200_000  # 2024-01-01, a multiple of 1 h
N = 500


def setup_run(tmp_path: Path, kind: str) -> tuple[DopeConfig, list[Bar]]:
    frame = generate_bars(["BTCUSDT"], START, START + N * INTERVAL, INTERVAL, seed=3)["BTCUSDT"]
    BarStore(tmp_path / "store").write_bars(frame, INTERVAL)
    fs = default_feature_set(INTERVAL)
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(tmp_path / "registry")
    champion = registry.register(make_model("zero").fit(X, y), feature_set=fs, symbol="BTCUSDT",
                                 interval_ms=INTERVAL, train_start_ms=START - INTERVAL, train_end_ms=START)
    registry.promote(champion, "champion")
    config = config_from_dict({
        "store": {"path": str(tmp_path / "store")}, "registry": {"path": str(tmp_path / "registry")},
        "collector": {"source": "synthetic", "symbols": ["BTCUSDT"]},
        "loop": {"enabled": True, "kinds": [kind], "retrain_every": "1h", "train_window": "1h",
                 "min_train_bars": 200, "min_bars": 100, "fit_timeout": "2m"}})
    return config, bars_from_frame(frame, INTERVAL, "BTCUSDT")


def run_until_fit_done(service: TrainerService, bars: list[Bar], timeout_s: float = 120) -> None:
    for bar in bars:
        service.handle(bar)
        if service.fit is not None:
            break
    assert service.fit is not None, "no fit was launched"
    deadline = time.monotonic() + timeout_s
    while service.fit is not None and time.monotonic() < deadline:
        service.step()
        time.sleep(0.05)
    assert service.fit is None, "the fit did not end"


def progress(bus_sub: object) -> list[int]:
    found = []
    while (msg := bus_sub.receive(0)) is not None:  # type: ignore[attr-defined]
        if isinstance(msg, LoopProgress):
            found.append(msg.hold_ms)
    return found


@pytest.mark.slow
def test_a_retrain_point_fits_registers_and_deploys_the_shadow(tmp_path: Path) -> None:
    config, bars = setup_run(tmp_path, "ridge")
    bus = InMemoryBus(hwm=10_000)
    holds = bus.subscriber(["loop."])
    service = TrainerService("trainer", bus.publisher("trainer"), [], config, first_start=True)
    service.publish_progress()
    run_until_fit_done(service, bars)
    retrain = START + 3_600_000
    assert service.counters["fits_succeeded"] == 1 and service.fit_at == retrain
    audit = AuditLog(tmp_path / "registry" / AUDIT_FILE).read()
    assert [e.action for e in audit] == ["register", "shadow"] and audit[0].time_ms == retrain
    data = audit[0].evidence["data"]
    assert (data["train_start_ms"], data["train_end_ms"]) == (START, retrain)  # the window, nothing after
    assert Registry(tmp_path / "registry").roles()[audit[0].model_id] == "shadow"
    step = service.schedule.step_ms
    seen = progress(holds)
    assert seen[0] == 0  # first start: hold at the first grid point after the first trade
    assert seen[1:4] == [START // step * step + step * k for k in (1, 2, 3)]  # then each checkpoint in turn
    assert retrain in seen and seen[-1] > retrain  # held at the retrain point, released once deployed
    assert not list((tmp_path / "registry" / "loop" / "fits").glob("fit-*"))


@pytest.mark.slow
def test_a_failing_fit_is_audited_and_the_service_goes_on(tmp_path: Path) -> None:
    config, bars = setup_run(tmp_path, "no_such_kind")
    bus = InMemoryBus(hwm=10_000)
    service = TrainerService("trainer", bus.publisher("trainer"), [], config, first_start=True)
    run_until_fit_done(service, bars)
    assert service.counters["fits_failed"] == 1 and service.problems.counts["fit_failed"] == 1
    entry = AuditLog(tmp_path / "registry" / AUDIT_FILE).read()[-1]
    assert entry.action == "reject" and entry.model_id == f"no_such_kind@{START + 3_600_000}"
    assert "fit failed" in entry.reason and "no_such_kind" in entry.reason
    assert service.pending is None and service.next_checkpoint is not None  # released: the loop goes on
    for bar in bars[np.searchsorted([b.open_time for b in bars], service.next_checkpoint):][:1]:
        service.handle(bar)
    assert service.counters["checkpoints"] >= 8


def health(alarm: bool, since: int) -> ModelHealth:
    return ModelHealth(symbol="BTCUSDT", event_time=since + 5 * INTERVAL, model_id="rf", window=100, alarm=alarm,
                       alarm_since=since if alarm else 0, reason="psi[vol_10] = 0.9 > 0.25" if alarm else "")


def test_a_drift_alarm_asks_for_one_early_retrain_a_checkpoint_later(tmp_path: Path) -> None:
    config, _ = setup_run(tmp_path, "ridge")
    service = TrainerService("trainer", InMemoryBus().publisher("trainer"), [], config)
    step = service.schedule.step_ms
    service.schedule.start(START)
    alarm_at = START + 2 * step + INTERVAL  # before the first scheduled retrain (1 h)
    service.handle(health(False, 0))
    assert service.counters["retrain_requests"] == 0
    service.handle(health(True, alarm_at))
    service.handle(health(True, alarm_at))  # the same alarm again: asked once
    assert service.counters["retrain_requests"] == 1 and "psi[vol_10]" in service.schedule.requested
    assert not service.schedule.retrain_due(START + 3 * step)  # the next checkpoint: too soon to be sure
    assert service.schedule.next_retrain_ms is not None and START + 4 * step < service.schedule.next_retrain_ms and service.schedule.retrain_due(START + 4 * step)
    off = TrainerService("trainer", InMemoryBus().publisher("trainer"), [],
                         config_from_dict({**msgspec.to_builtins(config), "loop": {
                             **msgspec.to_builtins(config.loop), "retrain_on_drift": False}}))
    off.handle(health(True, alarm_at))
    assert off.counters["retrain_requests"] == 0 and not off.schedule.requested


def test_with_the_barrier_a_checkpoint_waits_for_the_rendezvous_to_reach_it(tmp_path: Path) -> None:
    """Roles changed at a checkpoint must not reach rounds the rendezvous has not opened yet."""
    config, bars = setup_run(tmp_path, "ridge")
    champion = Registry(tmp_path / "registry").champion()
    assert champion is not None
    service = TrainerService("trainer", InMemoryBus().publisher("trainer"), [], config, first_start=True)
    assert service.barrier

    def score(bar: Bar) -> Score:
        return Score(symbol="BTCUSDT", event_time=bar.event_time, open_time=bar.open_time, model_id=champion,
                     model_kind="zero", feature_version="v", prediction=0.0, latency_us=10)

    def prediction(open_time: int) -> Prediction:
        return Prediction(symbol="BTCUSDT", event_time=open_time + INTERVAL - 1, open_time=open_time,
                          prediction=0.0, model_id=champion, chosen_by="champion", deadline_ms=50)

    service.handle(prediction(bars[0].open_time))
    for bar in bars:
        service.handle(bar)
        service.handle(score(bar))
        if service.pending is not None:
            break
    checkpoint = service.pending
    assert checkpoint is not None and service.pending_models == [champion]
    before = service.counters["checkpoints"]
    service.step()
    assert service.pending == checkpoint and service.counters["checkpoints"] == before  # the rendezvous lags
    service.handle(prediction(checkpoint - 2 * INTERVAL))
    assert service.counters["checkpoints"] == before  # still a bar behind
    service.handle(prediction(checkpoint - INTERVAL))
    assert service.counters["checkpoints"] == before + 1 and service.pending != checkpoint
