"""``dope optimize`` and ``dope report`` end to end on a small store (serial: no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope.cli import main
from dope.market.synthetic import generate_bars
from dope.store import BarStore

INTERVAL = 900_000
START = 1_735_689_600_000


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    bars = generate_bars(["BTCUSDT"], START, START + 30 * 86_400_000, INTERVAL, seed=3)["BTCUSDT"]
    store = tmp_path / "store"
    BarStore(store).write_bars(bars, INTERVAL)
    close = bars["close"].to_numpy()
    future = np.log(np.concatenate((close[2:] / close[1:-1], [1.0, 1.0])))
    rng = np.random.default_rng(0)
    files = []
    for name, values in (("informed", future + rng.normal(0, 0.002, len(close))),
                         ("noise", rng.normal(0, 0.002, len(close)))):
        path = tmp_path / f"{name}.parquet"
        pd.DataFrame({"open_time": bars["open_time"], "prediction": values}).to_parquet(path)
        files.append(path)
    return store, files[0], files[1]


def test_optimize_then_report(setup: tuple[Path, Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    store, informed, noise = setup
    out = tmp_path / "result"
    code = main(["optimize", "--symbol", "BTCUSDT", "--interval", "15m", "--store", str(store),
                 "--predictions", str(informed), f"n={noise}", "--uppers", "0:0.002:3", "--lowers", "-0.002,0",
                 "--train", "10d", "--test", "5d", "--serial", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for needle in ("informed", "n ", "all models", "buy & hold", "DSR", "PBO"):
        assert needle in printed
    assert pd.read_parquet(out / "trials.parquet").shape[0] == 2 * 6
    assert len(pd.read_parquet(out / "folds-informed.parquet")) == 4
    html = tmp_path / "report.html"
    assert main(["report", str(out), "-o", str(html)]) == 0
    assert "Sharpe by thresholds: informed" in html.read_text(encoding="utf-8")


def test_optimize_reports_bad_input_clearly(setup: tuple[Path, Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    store, informed, _ = setup
    base = ["optimize", "--symbol", "BTCUSDT", "--interval", "15m", "--store", str(store), "--serial"]
    assert main([*base, "--predictions", str(tmp_path / "missing.parquet")]) == 2
    assert "no such predictions file" in capsys.readouterr().err
    assert main([*base, "--predictions", str(informed), "--uppers", "a:b"]) == 2
    assert "bad threshold list" in capsys.readouterr().err
    assert main([*base, "--predictions", str(informed), "--train", "60d"]) == 2
    assert "too few" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not an optimization result" in capsys.readouterr().err


def test_optuna_seeds_are_variants_and_trials(setup: tuple[Path, Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store, informed, noise = setup
    out = tmp_path / "result"
    code = main(["optimize", "--symbol", "BTCUSDT", "--interval", "15m", "--store", str(store),
                 "--predictions", str(informed), "--method", "optuna", "--trials", "4", "--seeds", "3",
                 "--seed", "10", "--uppers", "0:0.002:3", "--lowers=-0.002,0", "--train", "10d", "--test", "5d",
                 "--serial", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 3 * 4 and sorted(set(trials["seed"])) == [10, 11, 12]
    for seed in (10, 11, 12):
        assert f"informed/s{seed}" in printed and (out / f"folds-informed-s{seed}.parquet").exists()
    assert "informed: 3 seeds, Sharpe" in printed and "(worst " in printed
    assert "12 trials in all, every seed counted in the DSR" in printed


def test_a_grid_ignores_seeds_and_zero_seeds_is_refused(setup: tuple[Path, Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    store, informed, _ = setup
    base = ["optimize", "--symbol", "BTCUSDT", "--interval", "15m", "--store", str(store), "--predictions",
            str(informed), "--uppers", "0,0.001", "--lowers=-0.001,0", "--train", "10d", "--test", "5d",
            "--serial", "--no-progress"]
    assert main([*base, "--seeds", "4"]) == 0
    printed = capsys.readouterr().out
    assert "one seed (a grid search is deterministic)" in printed and "/s" not in printed
    assert main([*base, "--method", "optuna", "--seeds", "0"]) == 2
    assert "seeds must be at least 1, not 0" in capsys.readouterr().err
