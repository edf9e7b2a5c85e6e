"""dope.research, the notebook façade: the same bars, forecasts, guard and results as the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope import research as dr
from dope.cli import main
from dope.errors import UserError
from tests.conftest import bundled_trades_file

HOUR = 3_600_000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return dr.read_files([dr.SAMPLE_KLINES])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    dr.ingest([dr.SAMPLE_KLINES], store=root)
    return root


@pytest.fixture(scope="module")
def study(bars: pd.DataFrame) -> dr.WalkForward:
    return dr.walk_forward(bars, "ridge", folds=3)


def test_the_sample_klines_are_three_months_of_hourly_btcusdt(bars: pd.DataFrame) -> None:
    assert len(bars) == 90 * 24 and dr.bars_interval(bars) == HOUR
    assert set(bars["symbol"]) == {"BTCUSDT"}
    assert pd.Timestamp(int(bars["open_time"].iloc[0]), unit="ms") == pd.Timestamp("2025-01-01")
    assert (np.diff(bars["open_time"].to_numpy()) == HOUR).all()


def test_files_and_the_store_give_the_same_bars(bars: pd.DataFrame, store: Path) -> None:
    stored = dr.load_bars("BTCUSDT", "1h", store=store)
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), bars.reset_index(drop=True), check_dtype=False)
    week = dr.load_bars("BTCUSDT", "1h", start="2025-01-06", end="2025-01-13", store=store)
    assert len(week) == 7 * 24 and int(week["open_time"].iloc[0]) == int(pd.Timestamp("2025-01-06").value // 10**6)


def test_re_aggregated_bars_are_those_of_dope_bars(store: Path, tmp_path: Path) -> None:
    daily = dr.load_bars("BTCUSDT", "1h", every="1d", start="2025-01-01", end="2025-01-08", store=store)
    out = tmp_path / "d.csv"
    assert main(["bars", "BTCUSDT", "--interval", "1h", "--every", "1d", "--start", "2025-01-01", "--end",
                 "2025-01-08", "--store", str(store), "--output", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), daily.reset_index(drop=True), check_dtype=False)
    assert len(daily) == 7 and daily["volume"].sum() == pytest.approx(
        dr.load_bars("BTCUSDT", "1h", start="2025-01-01", end="2025-01-08", store=store)["volume"].sum())


def test_trade_files_become_the_bars_ingest_stores(tmp_path: Path) -> None:
    trades = bundled_trades_file("BTCUSDT")
    direct = dr.read_files([trades], interval="10s")
    dr.ingest([trades], store=tmp_path, interval="10s")
    stored = dr.load_bars("BTCUSDT", "10s", store=tmp_path)
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), direct, check_dtype=False)
    assert 60 <= len(direct) <= 70 and dr.bars_interval(direct) == 10_000


def test_bad_input_is_a_clear_error(store: Path, bars: pd.DataFrame) -> None:
    with pytest.raises(UserError, match="no ETHUSDT bars"):
        dr.load_bars("ETHUSDT", "1h", store=store)
    with pytest.raises(UserError, match="not a multiple"):
        dr.load_bars("BTCUSDT", "1h", every="90m", store=store)
    with pytest.raises(UserError, match="interval"):
        dr.load_bars("BTCUSDT", "1 hour", store=store)
    with pytest.raises(UserError, match="missing column"):
        dr.backtest(bars, pd.DataFrame({"open_time": bars["open_time"]}))
    with pytest.raises(UserError, match="BTCUSDT: 1 bar"):
        dr.backtest(bars.iloc[:1], pd.DataFrame({"open_time": bars["open_time"], "prediction": 0.0}))


def test_features_are_the_featurizers(bars: pd.DataFrame) -> None:
    frame = dr.features(bars)
    fs = dr.feature_set("1h")
    assert list(frame.columns) == ["open_time", "close_time", *fs.names]
    assert len(bars) - fs.warmup <= len(frame) < len(bars)  # warm-up rows dropped, no others
    assert frame["open_time"].tolist() == bars["open_time"].iloc[-len(frame):].tolist()
    assert np.isfinite(frame[list(fs.names)].to_numpy()).all()


def test_walk_forward_forecasts_only_out_of_sample(bars: pd.DataFrame, study: dr.WalkForward) -> None:
    preds = study.predictions
    assert list(study.metrics.index) == ["ridge", "zero"] and len(study.folds) == 3
    assert int(study.metrics.loc["ridge", "bars"]) == len(preds)
    assert (preds["open_time"] >= preds["trained_until_ms"]).all()  # each fold's test bars follow its labels
    first_test = preds.groupby("fold")["open_time"].min()
    assert (first_test.to_numpy() == preds.groupby("fold")["trained_until_ms"].first().to_numpy()).all()
    assert study.settings["model"] == "ridge" and study.settings["folds"] == 3 and study.settings["dope"]


def test_a_scikit_learn_model_walks_forward_like_the_built_in_kind(bars: pd.DataFrame,
                                                                   study: dr.WalkForward) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mine = dr.walk_forward(bars, dr.sklearn_model(make_pipeline(StandardScaler(), Ridge(alpha=1.0))), folds=3)
    np.testing.assert_allclose(mine.predictions["prediction"], study.predictions["prediction"], rtol=1e-9,
                               atol=1e-15)
    with pytest.raises(UserError, match="params"):
        dr.walk_forward(bars, dr.sklearn_model(Ridge()), params={"alpha": 2.0})


def test_the_in_sample_guard_holds_in_the_facade(bars: pd.DataFrame, study: dr.WalkForward) -> None:
    bt = dr.backtest(bars, study.predictions, upper=0.001, lower=-0.001)
    assert list(bt.metrics.columns) == ["strategy", "buy_and_hold", "zero"]
    assert len(bt.equity) == len(bars) and bt.equity.index.name == "open_time"
    leaked = study.predictions.assign(trained_until_ms=study.predictions["trained_until_ms"] + HOUR)
    with pytest.raises(UserError, match="in sample.*allow_in_sample=True"):
        dr.backtest(bars, leaked)
    with pytest.raises(UserError, match="in sample"):
        dr.optimize(bars, {"ridge": leaked}, train="14d", test="7d")
    assert dr.backtest(bars, leaked, allow_in_sample=True).metrics.shape == bt.metrics.shape


def test_the_backtest_is_the_commands(bars: pd.DataFrame, store: Path, study: dr.WalkForward, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    study.predictions.to_parquet(tmp_path / "p.parquet")
    assert main(["backtest", "--predictions", str(tmp_path / "p.parquet"), "--symbol", "BTCUSDT", "--interval",
                 "1h", "--store", str(store), "--upper", "0.001", "--lower", "-0.001", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    mine = dr.backtest(bars, study.predictions, upper=0.001, lower=-0.001).metrics
    for name in ("strategy", "buy_and_hold", "zero"):
        for metric, value in printed[name].items():
            assert value == (None if not np.isfinite(mine.loc[metric, name]) else mine.loc[metric, name])


@pytest.mark.slow
def test_optimize_and_report(bars: pd.DataFrame, study: dr.WalkForward, tmp_path: Path) -> None:
    momentum = dr.walk_forward(bars, "momentum", folds=3)
    result = dr.optimize(bars, {"ridge": study.predictions, "momentum": momentum.predictions},
                         uppers="0:0.002:3", lowers=[-0.002, -0.001, 0.0], train="14d", test="7d")
    assert list(result.comparison["strategy"]) == ["ridge", "momentum", "all models", "buy & hold"]
    assert result.settings["lowers"] == (-0.002, -0.001, 0.0) and result.grid.n_trials == 2 * 9
    html = dr.report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Sharpe by thresholds: ridge" in html
    saved = result.save(tmp_path / "out")
    assert (saved / "trials.parquet").exists()
    assert dr.report(saved, tmp_path / "again.html").exists()


@pytest.mark.slow
def test_train_and_predict_through_the_registry(store: Path, tmp_path: Path) -> None:
    outcome = dr.train("ridge", "BTCUSDT", "1h", start="2025-01-01", end="2025-03-01", folds=2, store=store,
                       registry=tmp_path)
    preds = dr.predict(outcome.model_id, "BTCUSDT", start="2025-02-15", store=store, registry=tmp_path)
    assert int(preds["open_time"].min()) == int(pd.Timestamp("2025-03-01").value // 10**6)
    assert any("left out" in note for note in preds.attrs["notes"])
    inside = dr.predict(outcome.model_id, "BTCUSDT", start="2025-02-15", store=store, registry=tmp_path,
                        allow_in_sample=True)
    with pytest.raises(UserError, match="in sample"):
        dr.backtest(dr.load_bars("BTCUSDT", "1h", store=store), inside)


def test_walk_forward_takes_a_module_class_kind(bars: pd.DataFrame) -> None:
    """A plugin kind named as module:Class forecasts as the same model under its built-in name."""
    mine = dr.walk_forward(bars, "tests.unit.broken_models:GoodMomentum", folds=3)
    builtin = dr.walk_forward(bars, "momentum", folds=3)
    assert mine.model == "tests.unit.broken_models:GoodMomentum"
    assert mine.predictions["prediction"].tolist() == builtin.predictions["prediction"].tolist()
