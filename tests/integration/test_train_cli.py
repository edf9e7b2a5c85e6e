"""dope train -> dope predict -> dope models, on a small synthetic store: only out-of-sample rows come out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope.cli import main
from dope.features import compute_features, default_feature_set
from dope.market.synthetic import generate_bars
from dope.models.registry import Registry
from dope.store import BarStore
from dope.timeparse import parse_time

DAY = 86_400_000
START = parse_time("2024-03-01")
INTERVAL = 60_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    frames = generate_bars(["BTCUSDT"], START, START + 3 * DAY, INTERVAL, seed=11)
    BarStore(root).write_bars(frames["BTCUSDT"], INTERVAL)
    return root


@pytest.fixture(scope="module")
def trained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    registry = tmp_path_factory.mktemp("registry")
    code = main(["train", "ridge", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-03-01",
                 "--end", "2024-03-03", "--horizon", "2", "--folds", "3", "--params", "alpha=5.0",
                 "--store", str(store), "--registry", str(registry), "--no-progress"])
    assert code == 0
    [meta] = Registry(registry).list()
    return registry, meta["model_id"]


def test_train_registers_the_model_with_walk_forward_metrics(trained: tuple[Path, str]) -> None:
    registry, model_id = trained
    meta = Registry(registry).show(model_id)
    assert meta["kind"] == "ridge" and meta["params"] == {"alpha": 5.0}
    assert meta["data"]["train_start_ms"] == START and meta["data"]["train_end_ms"] == START + 2 * DAY
    metrics = meta["metrics"]
    assert metrics["horizon"] == 2 and len(metrics["folds"]) == 3
    assert metrics["model"]["n"] == metrics["zero_baseline"]["n"] > 1000
    assert metrics["zero_baseline"]["directional_accuracy"] == 0.5
    assert meta["feature_set"]["version"] == default_feature_set(INTERVAL).version


def test_predict_writes_only_out_of_sample_rows(store: Path, trained: tuple[Path, str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    registry, model_id = trained
    out = tmp_path / "preds.parquet"
    code = main(["predict", model_id, "--symbol", "BTCUSDT", "--start", "2024-03-02", "--end", "2024-03-04",
                 "--out", str(out), "--store", str(store), "--registry", str(registry)])
    assert code == 0
    assert "left out 1440 bar(s) opening before 2024-03-03T00:00:00Z" in capsys.readouterr().err
    preds = pd.read_parquet(out)
    assert list(preds.columns) == ["open_time", "close_time", "prediction", "model_id", "trained_until_ms"]
    assert preds["open_time"].tolist() == list(range(START + 2 * DAY, START + 3 * DAY, INTERVAL))
    assert (preds["model_id"] == model_id).all() and np.isfinite(preds["prediction"]).all()
    # the same numbers as the registered model on the offline features of those bars
    model, _ = Registry(registry).load(model_id)
    fs = default_feature_set(INTERVAL)
    features = compute_features(BarStore(store).read_bars("BTCUSDT", INTERVAL), fs)
    expected = model.predict_many(features[list(fs.names)].to_numpy())[-len(preds):]
    np.testing.assert_array_equal(preds["prediction"].to_numpy(), expected)


def test_predict_inside_the_training_range_is_refused(store: Path, trained: tuple[Path, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    registry, model_id = trained
    code = main(["predict", model_id, "--symbol", "BTCUSDT", "--start", "2024-03-01T12:00", "--end",
                 "2024-03-02", "--out", str(tmp_path / "p.parquet"), "--store", str(store),
                 "--registry", str(registry)])
    assert code == 2
    assert "no out-of-sample rows" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


def test_models_commands(trained: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    registry, model_id = trained
    assert main(["models", "list", "--registry", str(registry)]) == 0
    assert model_id in capsys.readouterr().out
    assert main(["models", "show", model_id, "--registry", str(registry)]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == model_id
    assert main(["models", "promote", model_id, "--role", "shadow", "--registry", str(registry)]) == 0
    assert Registry(registry).roles() == {model_id: "shadow"}
    assert main(["models", "retire", model_id, "--registry", str(registry)]) == 0
    assert Registry(registry).roles() == {model_id: "retired"}
    assert main(["models", "show", "--registry", str(registry)]) == 2


def test_corrupt_artifact_and_bad_requests_are_clear_errors(store: Path, trained: tuple[Path, str],
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    registry, model_id = trained
    copy = tmp_path / "registry"
    import shutil

    shutil.copytree(registry, copy)
    target = next((copy / model_id / "model").glob("*.skops"))
    target.write_bytes(target.read_bytes()[:-7])
    code = main(["predict", model_id, "--symbol", "BTCUSDT", "--out", str(tmp_path / "p.parquet"),
                 "--store", str(store), "--registry", str(copy)])
    assert code == 2 and "truncated" in capsys.readouterr().err
    base = ["--symbol", "BTCUSDT", "--interval", "1m", "--store", str(store), "--registry", str(copy),
            "--no-progress"]
    assert main(["train", "ridge", *base, "--params", "depth=3"]) == 2
    assert "bad parameters" in capsys.readouterr().err
    assert main(["train", "nonsense", *base]) == 2
    assert "unknown model kind" in capsys.readouterr().err
    assert main(["train", "ridge", *base[:1], "DOGEUSDT", *base[2:]]) == 2
    assert "no DOGEUSDT bars" in capsys.readouterr().err
