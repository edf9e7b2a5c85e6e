"""The example plugin package (examples/dope-plugin-example) installed into a temporary folder on
PYTHONPATH (``pip install --no-deps --no-build-isolation --no-index --target``: offline, the shared venv
untouched), then used through the real ``dope`` command: kinds, check, train, predict, backtest, and a
short ``dope up`` replay serving it beside a built-in model."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dope.messages import Prediction, Scorecard
from tests.e2e import test_up

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "dope-plugin-example"
KIND = "hist_gbm"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-source") / PACKAGE.name  # a build writes build/ beside its source
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, timeout=120,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    path = os.pathsep.join([str(REPO / "src"), str(REPO), str(target)])
    return {**os.environ, **test_up.ENV, "PYTHONPATH": path}


def dope(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dope.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_kinds_lists_the_plugin(plugin_env: dict[str, str]) -> None:
    out = dope(plugin_env, "models", "kinds", "--json")
    assert out.returncode == 0, out.stderr
    listed = {k["kind"]: k for k in json.loads(out.stdout)}
    assert listed[KIND] == {"kind": KIND, "class": "dope_plugin_example.model:HistGbmModel",
                            "source": "entry point dope-plugin-example 0.1.0"}


def test_check_passes_with_the_plugin_feature(plugin_env: dict[str, str]) -> None:
    out = dope(plugin_env, "models", "check", KIND, "--params", "max_iter=20", "--no-latency-budget")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS  feature parity up_share_20" in out.stdout and "all 31 checks passed" in out.stdout


def test_train_predict_backtest(plugin_env: dict[str, str], tmp_path: Path) -> None:
    store, registry = str(tmp_path / "store"), str(tmp_path / "registry")
    common = ["--store", store]
    assert dope(plugin_env, "synth", "BTCUSDT", "--start", "2024-01-01", "--duration", "6h", "--interval", "1m",
                "--seed", "3", *common).returncode == 0
    trained = dope(plugin_env, "train", KIND, "--symbol", "BTCUSDT", "--interval", "1m", "--end", "2024-01-01T04:00",
                   "--folds", "2", "--params", "max_iter=20", "--no-progress", "--registry", registry, *common)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    model_id = trained.stdout.split("registered ")[1].split()[0]
    meta = json.loads(dope(plugin_env, "models", "show", model_id, "--registry", registry).stdout)
    assert meta["kind"] == KIND and "up_share_20" in meta["feature_set"]["names"]
    assert meta["libraries"]["dope-plugin-example"] == "0.1.0" and "scikit-learn" in meta["libraries"]
    out = tmp_path / "preds.parquet"
    predicted = dope(plugin_env, "predict", model_id, "--symbol", "BTCUSDT",
                     "--start", "2024-01-01T04:00", "--out", str(out), "--registry", registry, *common)
    assert predicted.returncode == 0 and out.is_file(), predicted.stdout + predicted.stderr
    backtested = dope(plugin_env, "backtest", "--predictions", str(out), "--json", "--symbol", "BTCUSDT",
                      "--interval", "1m", *common)
    assert backtested.returncode == 0, backtested.stdout + backtested.stderr
    assert "sharpe" in backtested.stdout.lower()


def test_dope_up_serves_the_plugin_beside_a_built_in_model(plugin_env: dict[str, str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    registry = tmp_path / "registry"
    script = ("import json, sys; from tests.unit.test_services import register_models; "
              f"print(json.dumps(register_models(sys.argv[1], {{'{KIND}': {{'max_iter': 10}}, 'ridge': {{}}}}, "
              f"roles={{'{KIND}': 'champion', 'ridge': 'challenger'}})))")
    made = subprocess.run([sys.executable, "-c", script, str(registry)], env=plugin_env, capture_output=True,
                          text=True, timeout=300, check=True)
    ids: dict[str, Any] = json.loads(made.stdout)
    monkeypatch.setitem(test_up.ENV, "PYTHONPATH", plugin_env["PYTHONPATH"])
    config = test_up.stack_config(tmp_path, registry, ids, duration="30m",
                                  services=["featurizer", "models", "rendezvous", "collector"])
    tap = test_up.run_to_end(config, tmp_path)
    predictions = tap.of(Prediction)
    assert predictions, (tmp_path / "up.log").read_text()[-3000:]
    assert {p.model_id for p in predictions} == {ids[KIND]}
    assert all(p.chosen_by == "champion" and math.isfinite(p.prediction) for p in predictions)
    answered = {card.model_id: card.answered for card in tap.of(Scorecard)}
    assert answered.get(ids[KIND], 0) > 0 and answered.get(ids["ridge"], 0) > 0, answered


def test_the_packages_own_tests_pass(plugin_env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(PACKAGE / "pyproject.toml"),
                          "--rootdir", str(PACKAGE), str(PACKAGE / "tests")], env=plugin_env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
