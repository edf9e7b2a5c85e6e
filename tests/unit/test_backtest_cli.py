"""``dope backtest``: predictions joined with stored bars, metrics beside the baselines, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope.backtest import BacktestConfig, run_vectorized
from dope.cli import main
from dope.market.synthetic import generate_bars
from dope.store import BarStore

START = 1_735_689_600_000
MIN = 60_000


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    bars = generate_bars(["BTCUSDT"], START, START + 86_400_000, MIN, seed=3)["BTCUSDT"]
    BarStore(tmp_path / "store").write_bars(bars, MIN)
    return tmp_path / "store", bars


def _predictions(bars: pd.DataFrame, path: Path) -> pd.DataFrame:
    close = bars["close"].to_numpy()
    pred = np.r_[np.nan, close[1:] / close[:-1] - 1.0]
    frame = pd.DataFrame({"open_time": bars["open_time"], "prediction": pred}).iloc[:-100]  # last bars: none
    frame.to_parquet(path)
    return frame


def test_json_matches_the_library(store: tuple[Path, pd.DataFrame], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, bars = store
    preds = _predictions(bars, tmp_path / "p.parquet")
    args = ["backtest", "--predictions", str(tmp_path / "p.parquet"), "--symbol", "BTCUSDT", "--interval", "1m",
            "--store", str(root), "--upper", "0.0005", "--lower", "-0.0005", "--slippage-bps", "1", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    p = np.r_[preds["prediction"].to_numpy(), np.full(100, np.nan)]
    cfg = BacktestConfig(upper=0.0005, lower=-0.0005, slippage_bps=1.0)
    expected = run_vectorized(bars["open"], bars["close"], p, cfg, times=bars["open_time"]).metrics
    assert out["strategy"] == pytest.approx({k: (None if v != v else v) for k, v in expected.items()})
    assert out["zero"]["total_return"] == 0.0 and out["buy_and_hold"]["n_trades"] == 0
    assert main([*args, "--engine", "event"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == out["strategy"]


def test_table_lists_the_baselines(store: tuple[Path, pd.DataFrame], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, bars = store
    _predictions(bars, tmp_path / "p.parquet")
    assert main(["backtest", "--predictions", str(tmp_path / "p.parquet"), "--symbol", "BTCUSDT",
                 "--interval", "1m", "--store", str(root), "--short"]) == 0
    out = capsys.readouterr().out
    assert "strategy" in out and "buy_and_hold" in out and "zero" in out and "sharpe" in out
    assert "long/short" in out


def test_errors_are_clear(store: tuple[Path, pd.DataFrame], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    root, bars = store
    pd.DataFrame({"open_time": [1, 2], "value": [0.0, 1.0]}).to_parquet(tmp_path / "bad.parquet")
    base = ["backtest", "--symbol", "BTCUSDT", "--interval", "1m", "--store", str(root)]
    assert main([*base, "--predictions", str(tmp_path / "bad.parquet")]) == 2
    assert "missing column(s) prediction" in capsys.readouterr().err
    assert main([*base, "--predictions", str(tmp_path / "none.parquet")]) == 2
    assert "no such predictions file" in capsys.readouterr().err
    _predictions(bars, tmp_path / "p.parquet")
    assert main([*base[:2], "ETHUSDT", *base[3:], "--predictions", str(tmp_path / "p.parquet")]) == 2
    assert "no ETHUSDT bars" in capsys.readouterr().err
    assert main([*base, "--predictions", str(tmp_path / "p.parquet"), "--upper", "-1", "--lower", "1"]) == 2
    assert "above upper" in capsys.readouterr().err


@pytest.mark.slow
def test_a_first_run_with_an_empty_numba_cache_says_it_is_compiling(store: tuple[Path, pd.DataFrame],
                                                                   tmp_path: Path) -> None:
    root, bars = store
    _predictions(bars, tmp_path / "p.parquet")
    command = [sys.executable, "-m", "dope.cli", "backtest", "--predictions", str(tmp_path / "p.parquet"),
               "--symbol", "BTCUSDT", "--interval", "1m", "--store", str(root)]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))  # empty: a fresh install
    cold = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=True)
    warm = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert cold.stderr.count("compiling numba code") == 1 and "strategy" in cold.stdout
    assert "compiling" not in warm.stderr and warm.stdout == cold.stdout
