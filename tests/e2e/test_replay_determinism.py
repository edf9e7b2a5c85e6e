"""A full-speed replay of the real recorded trades, twice, with the default rendezvous and flow settings.

``dope up --replay --speed 0 --exit-when-done`` on the bundled BTCUSDT/ETHUSDT trades at 1 s bars with a
random forest (champion), an LSTM (challenger) and the zero baseline (canary): every bar after the
feature warm-up gets a prediction, and the two runs publish identical predictions, decisions and fills.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w

from dope.config import DopeConfig, config_from_dict
from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import Decision, Fill, Prediction
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.supervisor import resolve_ports
from tests.e2e.test_up import Tap

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
INTERVAL = 1_000
KINDS = {"random_forest": ({"n_estimators": 10, "max_depth": 4}, "champion"),
         "lstm": ({"lookback": 8, "units": 4, "epochs": 1}, "challenger"), "zero": ({}, "canary")}


def register(root: Path) -> dict[str, str]:
    """Small models of the 1 s feature set, trained on synthetic bars, with their roles."""
    fs = default_feature_set(INTERVAL)
    frame = generate_bars(["BTCUSDT"], 0, 1_500 * INTERVAL, INTERVAL, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(root)
    ids = {}
    for kind, (params, role) in KINDS.items():
        ids[kind] = registry.register(make_model(kind, **params).fit(X, y), feature_set=fs, symbol="BTCUSDT",
                                      interval_ms=INTERVAL, train_start_ms=0, train_end_ms=1_500 * INTERVAL)
        registry.promote(ids[kind], role)
    return ids


def replay_config(work: Path, registry: Path, ids: dict[str, str]) -> DopeConfig:
    """Defaults but for the places (free ports, files under ``work``), 1 s bars and thresholds that trade."""
    raw = {
        "bars": {"interval": "1s"},
        "store": {"path": str(work / "store")}, "registry": {"path": str(registry)},
        "bus": {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0"},
        "services": {k: "tcp://127.0.0.1:0" for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "collector": {"source": "replay"},
        "models": {"deploy": [{"model": mid, "endpoint": "tcp://127.0.0.1:0", "name": f"model-{kind}"}
                              for kind, mid in ids.items()]},
        "trader": {"upper": 0.0, "lower": 0.0, "state_dir": str(work / "trader")},
        "supervisor": {"services": ["featurizer", "models", "decoy", "rendezvous", "trader", "collector"],
                       "metrics": ""},
    }
    return resolve_ports(config_from_dict(raw))


def run_replay(config: DopeConfig, work: Path) -> Tap:
    """``dope up --replay --speed 0 --exit-when-done`` (bundled trades) on ``config``, tapped."""
    path = work / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    tap = Tap(config)
    args = [sys.executable, "-m", "dope.cli", "up", "--config", str(path), "--run-dir", str(work / "run"),
            "--no-bootstrap", "--replay", "--speed", "0", "--exit-when-done"]
    try:
        with open(work / "up.log", "wb") as log:
            code = subprocess.run(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=log,
                                  timeout=300).returncode
        assert code == 0, (work / "up.log").read_text()[-3000:]
    finally:
        time.sleep(0.2)
        tap.close()
    return tap


def published(tap: Tap) -> dict[str, list[Any]]:
    """What matters of every prediction, decision and fill, in bar order (latencies left out)."""
    def keyed(kind: type[Any], fields: tuple[str, ...]) -> list[Any]:
        return sorted(tuple(getattr(m, f) for f in ("symbol", *fields)) for m in tap.of(kind))

    return {"predictions": keyed(Prediction, ("open_time", "prediction", "model_id", "chosen_by", "answered",
                                              "missed")),
            "decisions": keyed(Decision, ("open_time", "prediction", "action", "target_position", "reason")),
            "fills": keyed(Fill, ("event_time", "client_order_id", "side", "qty", "price", "fee"))}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Tap]:
    registry = tmp_path_factory.mktemp("registry")
    ids = register(registry)
    taps = []
    for n in range(2):
        work = tmp_path_factory.mktemp(f"replay{n}")
        taps.append(run_replay(replay_config(work, registry, ids), work))
    return taps


def test_every_bar_after_the_warm_up_gets_a_prediction(two_runs: list[Tap]) -> None:
    warmup = default_feature_set(INTERVAL).warmup
    for symbol in ("BTCUSDT", "ETHUSDT"):
        decisions = sorted(two_runs[0].of(Decision, symbol), key=lambda d: d.open_time)
        assert len(decisions) > 600  # 11 minutes of 1 s bars
        assert [d.open_time for d in decisions] == sorted({d.open_time for d in decisions})
        without = [i for i, d in enumerate(decisions) if d.prediction is None]
        assert without == list(range(warmup - 1)), f"{symbol}: bars without a prediction: {without}"


def test_two_full_speed_replays_publish_identical_predictions_decisions_and_fills(two_runs: list[Tap]) -> None:
    first, second = (published(tap) for tap in two_runs)
    assert len(first["fills"]) > 10 and len(first["predictions"]) > 1_000
    for kind in ("predictions", "decisions", "fills"):
        assert first[kind] == second[kind], kind
