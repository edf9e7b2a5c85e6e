"""SIGKILL of a model service that learns online: restarted, it resumes its snapshot, and every prediction it
publishes (before and after the kill) equals a replay of the same bars; its labels came only from bars received."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from dope.config import load_config
from dope.features import OnlineFeaturizer, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import Bar, Features, Heartbeat, Score
from dope.models import make_model
from dope.models.registry import Registry
from dope.rendezvous.online import replay
from dope.services.featurizer import feature_set_of_config
from dope.services.supervisor import free_port
from dope.transport import ZmqPublisher, ZmqSubscriber
from tests.unit.test_services import INTERVAL, START, synthetic_bars

HORIZON = 3


def write_config(path: Path, registry: Path, collector: str, featurizer: str, endpoint: str) -> None:
    path.write_text(tomli_w.dumps({
        "bus": {"snapshot": "", "heartbeat_ms": 200, "linger_ms": 0},
        "registry": {"path": str(registry)},
        "services": {"collector": collector, "featurizer": featurizer},
        "models": {"deploy": [{"model": "role:champion", "endpoint": endpoint, "name": "online"}]}}))


def start_service(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "dope.services.model", "--config", str(config)],
                                env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=err)


def register(config_path: Path, registry: Path) -> str:
    fs = feature_set_of_config(load_config(config_path))
    frame = generate_bars(["BTCUSDT"], START - 300 * INTERVAL, START, INTERVAL, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, HORIZON)
    reg = Registry(registry)
    model_id = reg.register(make_model("online_ridge").fit(X, y), feature_set=fs, symbol="BTCUSDT",
                            interval_ms=INTERVAL, train_start_ms=int(frame["open_time"].iloc[0]),
                            train_end_ms=START, extra={"horizon": HORIZON})
    reg.promote(model_id, "champion")
    return model_id


def stream(config_path: Path) -> tuple[list[Bar], list[Features]]:
    fs = feature_set_of_config(load_config(config_path))
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    pairs = [(bar, featurizer.update(bar)) for bar in synthetic_bars(["BTCUSDT"], fs.warmup + 60)["BTCUSDT"]]
    kept = [(b, v) for b, v in pairs if v is not None]
    return [b for b, _ in kept], [v for _, v in kept if v is not None]


def ready(sub: ZmqSubscriber, log: Path, timeout_s: float = 30.0) -> None:
    """Wait for a heartbeat of the (re)started service, set up and idle: our subscription reached it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.receive(100)
        if isinstance(msg, Heartbeat) and msg.counters.get("starting") == 0 and msg.counters.get("handled") == 0:
            return
    raise AssertionError(f"the model service never came up; log:\n{log.read_text()[-3000:]}")


def saved(sub: ZmqSubscriber, log: Path, timeout_s: float = 30.0) -> None:
    """Wait for a heartbeat (sent after the last score received) saying every prediction is in a snapshot."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.receive(100)
        if isinstance(msg, Heartbeat) and msg.counters.get("online.snapshots", 0) > 0 \
                and msg.counters.get("online.unsaved") == 0:
            return
    raise AssertionError(f"predictions left out of the snapshots; log:\n{log.read_text()[-3000:]}")


def collect(sub: ZmqSubscriber, scores: dict[int, float], until: int, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(scores) < until:
        assert time.monotonic() < deadline, f"{len(scores)} scores of {until}; log:\n{log.read_text()[-3000:]}"
        msg = sub.receive(100)
        if isinstance(msg, Score) and not msg.abstained:
            scores[msg.open_time] = msg.prediction


@pytest.mark.slow
def test_a_sigkilled_online_model_service_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    registry, log, cfg = tmp_path / "registry", tmp_path / "model.log", tmp_path / "dope.toml"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with ZmqPublisher("tcp://127.0.0.1:0", "collector", linger_ms=0) as bars_pub, \
            ZmqPublisher("tcp://127.0.0.1:0", "featurizer", linger_ms=0) as features_pub, \
            ZmqSubscriber([endpoint], ["score.", "heartbeat."]) as out:
        write_config(cfg, registry, bars_pub.endpoint, features_pub.endpoint, endpoint)
        model_id = register(cfg, registry)
        bars, vectors = stream(cfg)
        half = len(bars) // 2
        scores: dict[int, float] = {}
        process = start_service(cfg, log)
        try:
            for round_, part in enumerate((range(half), range(half, len(bars)))):
                for pub in (bars_pub, features_pub):
                    assert pub.wait_for_subscriptions(round_ + 1, timeout_ms=30_000), log.read_text()[-3000:]
                ready(out, log)
                for i in part:
                    bars_pub.publish(bars[i])
                    features_pub.publish(vectors[i])
                    time.sleep(0.005)
                collect(out, scores, part.stop, log)
                if round_ == 0:
                    saved(out, log)  # a snapshot is taken just after the scores are published
                    process.send_signal(signal.SIGKILL)  # no warning: only the snapshot survives
                    process.wait(10)
                    process = start_service(cfg, log)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0, log.read_text()[-3000:]

    model, _ = Registry(registry).load(model_id)
    expected = replay(model, np.array([v.values for v in vectors]), np.array([b.close for b in bars]),
                      np.array([b.open_time for b in bars]), INTERVAL, HORIZON)
    np.testing.assert_array_equal([scores[v.open_time] for v in vectors], expected)
    assert (registry / "online" / "online" / "BTCUSDT" / "latest.json").is_file()
    text = log.read_text()
    assert text.count("serves " + model_id) == 2 and "snapshot_" not in text
