"""A model's training period is in sample for every symbol: dope predict leaves it out, and dope backtest and
dope optimize refuse predictions of bars opening before ``trained_until_ms`` unless ``--allow-in-sample``.

Per symbol pairing: a ridge model trained on BTCUSDT over 2024-03-01 .. 03-03, predicting BTCUSDT (the same
symbol) and ETHUSDT (another one), through the real CLI on a real Parquet store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from dope.cli import main
from dope.market.synthetic import generate_bars
from dope.models.registry import Registry, trained_until_ms
from dope.store import BarStore
from dope.timeparse import parse_time

DAY = 86_400_000
START = parse_time("2024-03-01")
TRAINED_UNTIL = START + 2 * DAY
INTERVAL = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A store of two symbols over 3 days and a ridge model trained on the first 2 days of BTCUSDT."""
    store, registry = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("registry")
    for symbol, frame in generate_bars(list(SYMBOLS), START, START + 3 * DAY, INTERVAL, seed=5).items():
        BarStore(store).write_bars(frame, INTERVAL)
        assert symbol in SYMBOLS
    assert main(["train", "ridge", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-03-01",
                 "--end", "2024-03-03", "--horizon", "1", "--folds", "2", "--store", str(store),
                 "--registry", str(registry), "--no-progress"]) == 0
    [meta] = Registry(registry).list()
    assert trained_until_ms(meta) == TRAINED_UNTIL
    return store, registry, meta["model_id"]


def _predict(setup: tuple[Path, Path, str], symbol: str, out: Path, *extra: str) -> int:
    store, registry, model_id = setup
    return main(["predict", model_id, "--symbol", symbol, "--start", "2024-03-02", "--end", "2024-03-04",
                 "--out", str(out), "--store", str(store), "--registry", str(registry), *extra])


def _backtest(setup: tuple[Path, Path, str], symbol: str, predictions: Path, *extra: str) -> int:
    return main(["backtest", "--predictions", str(predictions), "--symbol", symbol, "--interval", "1m",
                 "--store", str(setup[0]), *extra])


def _optimize(setup: tuple[Path, Path, str], symbol: str, predictions: Path, *extra: str) -> int:
    return main(["optimize", "--predictions", f"m={predictions}", "--symbol", symbol, "--interval", "1m",
                 "--store", str(setup[0]), "--uppers", "0,0.0005", "--lowers=-0.0005,0", "--train", "6h",
                 "--test", "6h", "--serial", "--no-progress", *extra])


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_predict_leaves_out_the_training_period_for_any_symbol(
        setup: tuple[Path, Path, str], symbol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.parquet"
    assert _predict(setup, symbol, out) == 0
    assert "left out 1440 bar(s) opening before 2024-03-03T00:00:00Z" in capsys.readouterr().err
    preds = pd.read_parquet(out)
    assert list(preds.columns) == ["open_time", "close_time", "prediction", "model_id", "trained_until_ms"]
    assert preds["open_time"].tolist() == list(range(TRAINED_UNTIL, START + 3 * DAY, INTERVAL))
    assert (preds["trained_until_ms"] == TRAINED_UNTIL).all() and (preds["model_id"] == setup[2]).all()


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_predict_entirely_inside_the_training_period_is_refused_for_any_symbol(
        setup: tuple[Path, Path, str], symbol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, registry, model_id = setup
    out = tmp_path / "p.parquet"
    assert main(["predict", model_id, "--symbol", symbol, "--start", "2024-03-01T12:00", "--end", "2024-03-02",
                 "--out", str(out), "--store", str(store), "--registry", str(registry)]) == 2
    assert "no out-of-sample rows" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_backtest_and_optimize_refuse_in_sample_predictions_for_any_symbol(
        setup: tuple[Path, Path, str], symbol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inside = tmp_path / "inside.parquet"
    assert _predict(setup, symbol, inside, "--allow-in-sample") == 0
    assert "kept 1440 in-sample bar(s)" in capsys.readouterr().err
    for command in (_backtest, _optimize):
        assert command(setup, symbol, inside) == 2
        err = capsys.readouterr().err
        assert str(inside) in err and setup[2] in err and "1440 prediction(s)" in err
        assert "first at 2024-03-02T00:00:00Z" in err and f"trained_until_ms {TRAINED_UNTIL}" in err
        assert "--allow-in-sample" in err
    assert _backtest(setup, symbol, inside, "--allow-in-sample") == 0


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_backtest_and_optimize_accept_predictions_after_the_training_period(
        setup: tuple[Path, Path, str], symbol: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    after = tmp_path / "after.parquet"
    assert _predict(setup, symbol, after) == 0
    with caplog.at_level(logging.WARNING):
        assert _backtest(setup, symbol, after) == 0
        assert _optimize(setup, symbol, after) == 0
    assert "provenance unknown" not in caplog.text and "in sample" not in caplog.text


def test_predictions_without_provenance_are_used_with_a_warning(
        setup: tuple[Path, Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bars = BarStore(setup[0]).read_bars("ETHUSDT", INTERVAL)
    hand_made = tmp_path / "hand.csv"
    pd.DataFrame({"open_time": bars["open_time"], "prediction": 0.001}).to_csv(hand_made, index=False)
    with caplog.at_level(logging.WARNING):
        assert _backtest(setup, "ETHUSDT", hand_made) == 0
    assert f"{hand_made}: 4320 of 4320 prediction(s) have no trained_until_ms" in caplog.text
    assert "provenance unknown" in caplog.text
