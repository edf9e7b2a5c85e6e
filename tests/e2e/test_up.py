"""``dope up`` end to end: real processes, real ZeroMQ, random free ports, the synthetic market.

Parity: the stack's decisions and fills equal the backtester's event path on the same bars and
predictions, and its predictions equal the champion's offline predictions; two runs of the same
replay give the same decisions.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import tomli_w

from dope.backtest import run_event
from dope.config import DopeConfig, config_from_dict, with_overrides
from dope.features import OnlineFeaturizer, compute_features, default_feature_set
from dope.messages import AnyMessage, Decision, Equity, Fill, Prediction, encode
from dope.models.registry import Registry
from dope.services.supervisor import resolve_ports
from dope.store import BarStore
from dope.transport import ZmqPublisher, ZmqSubscriber
from tests.unit.test_services import INTERVAL, register_models, synthetic_bars

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MODELS = {"ridge": {}, "random_forest": {"n_estimators": 5, "max_depth": 4}, "zero": {}}
ROLES = {"ridge": "champion", "random_forest": "challenger", "zero": "canary"}
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),  # this checkout's code
       "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("registry")
    return root, register_models(root, MODELS, roles=ROLES)


def stack_config(work: Path, registry: Path, ids: dict[str, str], *, deploy: dict[str, dict[str, Any]] | None = None,
                 duration: str = "40m", speed: float = 0.0, deadline_ms: int = 5_000,
                 services: list[str] | None = None) -> DopeConfig:
    """A whole stack on free ports, state under ``work``, the models of ``ids`` deployed by id."""
    deploy = deploy if deploy is not None else {kind: {} for kind in ids}
    raw = {
        "store": {"path": str(work / "store")}, "registry": {"path": str(registry)},
        "bus": {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0", "heartbeat_ms": 200},
        "services": {k: "tcp://127.0.0.1:0" for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "collector": {"source": "synthetic", "symbols": list(SYMBOLS)},
        "synthetic": {"duration": duration, "rate_scale": 0.2, "speed": speed, "seed": 5},
        "models": {"deploy": [{"model": ids[kind], "endpoint": "tcp://127.0.0.1:0", "name": f"model-{kind}", **extra}
                              for kind, extra in deploy.items()]},
        "rendezvous": {"deadline_ms": deadline_ms, "publish_every": 1},
        "trader": {"upper": 0.0, "lower": 0.0, "state_dir": str(work / "trader"), "journal_fsync": False},
        "supervisor": {"services": services or ["featurizer", "models", "decoy", "rendezvous", "trader", "collector"],
                       "metrics": "127.0.0.1:0", "restart_min_ms": 300, "stop_timeout_ms": 5_000},
    }
    return resolve_ports(config_from_dict(raw))


@dataclass
class Tap:
    """Everything the rendezvous and the trader publish, collected in a thread."""

    config: DopeConfig
    messages: list[AnyMessage] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sub = ZmqSubscriber([self.config.services.rendezvous, self.config.services.trader],
                                 ["prediction.", "decision.", "fill.", "equity.", "scorecard."])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msg = self.sub.receive(50)
            if msg is not None:
                self.messages.append(msg)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sub.close()

    def of(self, kind: type[Any], symbol: str | None = None) -> list[Any]:
        return [m for m in list(self.messages) if isinstance(m, kind) and symbol in (None, m.symbol)]




def start_up(config: DopeConfig, work: Path, *extra: str) -> subprocess.Popen[bytes]:
    path = work / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    args = [sys.executable, "-m", "dope.cli", "up", "--config", str(path), "--run-dir", str(work / "run"),
            "--no-bootstrap", *extra]
    return subprocess.Popen(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=open(work / "up.log", "wb"))


def run_to_end(config: DopeConfig, work: Path, tap: Tap | None = None) -> Tap:
    """``dope up --exit-when-done`` on ``config``; the tap (a new ``Tap`` if None) holds what was published."""
    tap = tap if tap is not None else Tap(config)
    proc = start_up(config, work, "--exit-when-done")
    try:
        assert proc.wait(timeout=240) == 0, (work / "up.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        time.sleep(0.2)
        tap.close()
    return tap


def offline_predictions(store: Path, registry: Path, model_id: str, symbol: str) -> tuple[Any, dict[int, float]]:
    bars = BarStore(store).read_bars(symbol, INTERVAL)
    fs = default_feature_set(INTERVAL)
    features = compute_features(bars, fs)
    model, _ = Registry(registry).load(model_id)
    values = model.predict_many(features[list(fs.names)].to_numpy(np.float64))
    ok = np.isfinite(values)
    return bars, dict(zip(features["open_time"].to_numpy()[ok].tolist(), values[ok].tolist(), strict=True))


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory: pytest.TempPathFactory,
                registry_dir: tuple[Path, dict[str, str]]) -> Iterator[tuple[list[tuple[Path, DopeConfig, Tap]], dict[str, str]]]:
    root, ids = registry_dir
    runs = []
    for n in range(2):
        work = tmp_path_factory.mktemp(f"parity{n}")
        config = stack_config(work, root, ids)
        runs.append((work, config, run_to_end(config, work)))
    yield runs, ids


def test_parity_with_the_backtester_event_path(parity_runs: Any, registry_dir: tuple[Path, dict[str, str]]) -> None:
    runs, ids = parity_runs
    work, config, tap = runs[0]
    fs = default_feature_set(INTERVAL)
    for symbol in SYMBOLS:
        bars, offline = offline_predictions(work / "store", registry_dir[0], ids["ridge"], symbol)
        assert len(bars) == 240
        preds = {p.open_time: p for p in tap.of(Prediction, symbol)}
        assert len(preds) == len(bars) - fs.warmup + 1 and set(preds) == set(offline)
        assert all(p.chosen_by == "champion" and p.model_id == ids["ridge"] for p in preds.values())
        assert [preds[t].prediction for t in sorted(preds)] == pytest.approx([offline[t] for t in sorted(preds)],
                                                                             rel=1e-9, abs=1e-15)
        series = np.array([preds[t].prediction if t in preds else math.nan for t in bars["open_time"]])
        expected = run_event(bars, series, config.trader.strategy(), symbol=symbol)
        equity = {e.open_time: e for e in tap.of(Equity, symbol)}
        assert len(equity) == len(bars)
        got_position = [equity[t].position for t in bars["open_time"]]
        assert got_position == pytest.approx(expected.position.tolist(), rel=1e-12)
        assert [equity[t].equity for t in bars["open_time"]] == pytest.approx(expected.equity.tolist(), rel=1e-12)
        fills = tap.of(Fill, symbol)
        trades = expected.trades
        n_fills = len(trades) + int((~trades["is_open"].astype(bool)).sum())
        assert len(fills) == n_fills and n_fills > 2
        prices = sorted([*trades["entry_price"].tolist(), *trades.loc[~trades["is_open"].astype(bool), "exit_price"]])
        assert sorted(f.price for f in fills) == pytest.approx(prices, rel=1e-12)
        decisions = tap.of(Decision, symbol)
        assert len({d.open_time for d in decisions}) == len(bars)


def test_two_runs_give_the_same_decisions(parity_runs: Any) -> None:
    runs, _ = parity_runs

    def key(tap: Tap) -> list[tuple[Any, ...]]:
        return sorted((d.symbol, d.open_time, d.action, d.target_position, d.prediction) for d in tap.of(Decision))

    assert key(runs[0][2]) == key(runs[1][2]) and len(key(runs[0][2])) == 480


def wait_status(run: Path, condition: Any, timeout: float = 90.0) -> dict[str, Any]:
    """The supervisor's status once ``condition(status)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads((run / "status.json").read_text())
            if condition(status):
                return dict(status)
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"status condition not met in {timeout} s")


def test_bad_input_is_rejected_counted_and_no_service_dies(tmp_path: Path,
                                                           registry_dir: tuple[Path, dict[str, str]]) -> None:
    """Garbage frames, a wrong schema version and a NaN bar on the bus, and a model emitting NaN
    predictions: each rejected, counted and logged; every service stays up; decisions go on."""
    root, ids = registry_dir
    config = stack_config(tmp_path, root, ids, deploy={"ridge": {"nan_every": 3}, "zero": {}},
                          services=["models", "rendezvous", "trader"], deadline_ms=500)
    config = with_overrides(config, {"bus": {"run_id": "e2e-bad-input"}})  # the test's publishers join the run
    collector = ZmqPublisher(config.bus.publish, "rogue-collector", run_id=config.bus.run_id)
    featurizer = ZmqPublisher(config.services.featurizer, "rogue-featurizer", run_id=config.bus.run_id)
    tap = Tap(config)
    proc = start_up(config, tmp_path)
    try:
        wait_status(tmp_path / "run", lambda s: all(v["state"] == "running" for v in s["services"].values()))
        assert collector.wait_for_subscriptions(2, 10_000) and featurizer.wait_for_subscriptions(3, 10_000)
        time.sleep(0.3)
        bars = synthetic_bars(["BTCUSDT"], 150)["BTCUSDT"]
        online = OnlineFeaturizer(default_feature_set(INTERVAL), "BTCUSDT")
        collector._send(b"bar.BTCUSDT", b"\x00 not msgpack")
        featurizer._send(b"features.BTCUSDT", b"\xc1garbage")
        collector._send(b"bar.BTCUSDT", encode(msgspec.structs.replace(bars[0], v=99, seq=1, source="x")))
        collector.publish(msgspec.structs.replace(bars[0], close=math.nan, open_time=bars[0].open_time - INTERVAL))
        vectors = 0
        for bar in bars:
            collector.publish(bar)
            vector = online.update(bar)
            if vector is not None:
                featurizer.publish(vector)
                vectors += 1
            time.sleep(0.002)
        status = wait_status(tmp_path / "run", lambda s: s["services"]["rendezvous"]["counters"].get(
            "rendezvous.rounds_closed") == vectors and s["services"]["trader"]["counters"]["handled"] >= 151 + vectors)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        tap.close()
        collector.close()
        featurizer.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert all(s["restarts"] == 0 for s in status["services"].values()), status
    preds = tap.of(Prediction)
    assert len(preds) == vectors == 30
    assert all(p.prediction is None or math.isfinite(p.prediction) for p in preds)
    nan_rounds = [p for p in preds if ids["ridge"] not in p.answered]
    assert len(nan_rounds) == 10 and all(p.model_id != ids["ridge"] for p in nan_rounds)
    assert len({d.open_time for d in tap.of(Decision)}) == len(bars)  # one decision per bar
    counters = {name: s["counters"] for name, s in status["services"].items()}
    assert counters["trader"]["bus.rejected"] >= 2 and counters["trader"].get("rejected.bad_bar", 0) == 1
    # the models are deployed by id and learn nothing online, so they read no bars: only the garbage vector
    assert counters["model-ridge"]["bus.rejected"] == 1 and counters["model-zero"]["bus.rejected"] == 1
    assert counters["rendezvous"]["bus.rejected"] >= 3
    assert counters["rendezvous"]["rendezvous.rejected_non_finite"] == 10
    logs = (tmp_path / "run" / "logs" / "trader.log").read_text()
    assert "schema version 99" in logs and "trader[" in logs
