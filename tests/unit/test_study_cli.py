"""``dope study`` counts seeds as trials and reports their spread (small, seeded klines; seconds)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from dope.backtest.walkforward import SeedSpread, seed_groups
from dope.cli import main
from dope.commands.study import is_seeded, variant_names

START_MS = 1_735_689_600_000  # 2025-01-01
BAR_MS = 900_000
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")


def write_klines(folder: Path, symbol: str, days: int, seed: int = 7) -> None:
    """A seeded random walk as a Binance 15m klines file (the layout of data.binance.vision)."""
    n = days * 96
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.003, n)))
    opens = np.concatenate([[100.0], close[:-1]])
    volume = rng.uniform(5.0, 15.0, n)
    lines = [HEADER]
    for i in range(n):
        t = START_MS + i * BAR_MS
        hi, lo = max(opens[i], close[i]) * 1.001, min(opens[i], close[i]) * 0.999
        lines.append(f"{t},{opens[i]:.6f},{hi:.6f},{lo:.6f},{close[i]:.6f},{volume[i]:.4f},{t + BAR_MS - 1},"
                     f"{volume[i] * close[i]:.4f},{int(volume[i] * 10)},{volume[i] / 2:.4f},"
                     f"{volume[i] * close[i] / 2:.4f},0")
    with gzip.open(folder / f"{symbol}-15m-2025-01-01_2025-02-01.csv.gz", "wt") as stream:
        stream.write("\n".join(lines) + "\n")


def test_seeded_kinds_are_known_by_their_parameters() -> None:
    assert is_seeded("random_forest") and is_seeded("lstm")
    assert not is_seeded("momentum") and not is_seeded("zero")
    assert variant_names("random_forest", 2) == {0: "random_forest/s0", 1: "random_forest/s1"}
    assert variant_names("momentum", 5) == {None: "momentum"}
    assert seed_groups(["random_forest/s0", "momentum", "random_forest/s1", "all models"]) == {
        "random_forest": ["random_forest/s0", "random_forest/s1"]}


def test_seed_spread_is_mean_sd_and_worst() -> None:
    spread = SeedSpread.of([1.0, 3.0, float("nan"), 2.0])
    assert spread.mean == pytest.approx(2.0) and spread.sd == pytest.approx(1.0) and spread.worst == 1.0
    assert spread.text(".2f") == "2.00 ± 1.00 (worst 1.00)"


def test_study_fits_every_seed_and_counts_each_as_a_trial(tmp_path: Path) -> None:
    write_klines(tmp_path, "TESTUSDT", days=30)
    out = tmp_path / "out"
    assert main(["study", "--data", str(tmp_path), "--out", str(out), "--symbols", "TESTUSDT", "--models",
                 "random_forest", "zero", "--seeds", "2", "--train-days", "7", "--test-days", "7",
                 "--serial", "--no-progress"]) == 0
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "| random_forest/s0 |" in readme and "| random_forest/s1 |" in readme
    assert re.search(r"\| random_forest \| 2 \| -?[\d.]+ ± [\d.]+ \(worst -?[\d.]+\) \|", readme)
    # 2 seeds + zero + "all models": 4 variants in the DSR; the in-sample grid tries 3 models x 25 pairs
    assert "Deflated by the 4 variants compared (every seed counted)" in readme
    assert "in-sample grid over the whole span: 75 trials" in readme
    assert "seeds 0..1 of each stochastic model" in readme


def test_study_refuses_no_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "--data", str(tmp_path), "--seeds", "0"]) != 0
    assert "--seeds must be at least 1" in capsys.readouterr().err
