"""The loop's fit job: a child process fits a kind on stored bars, registers it, and reports the id."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dope.loop.fit import FitFailed, FitJob, FitResult, launch
from dope.market.config import SyntheticConfig
from dope.market.synthetic import configured_bars
from dope.models.registry import Registry
from dope.store import BarStore

INTERVAL_MS = 10_000
START_MS = 1_700_000_000_000


def _store(root: Path, bars: int = 3_000) -> BarStore:
    store = BarStore(root)
    frames = configured_bars(SyntheticConfig(), ["BTCUSDT"], START_MS, START_MS + bars * INTERVAL_MS, INTERVAL_MS)
    store.write_bars(frames["BTCUSDT"], INTERVAL_MS)
    return store


def _wait(process, timeout_s: float = 120.0) -> FitResult:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = process.poll()
        if result is not None:
            return result  # type: ignore[no-any-return]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the fit did not finish in time")


def test_child_fits_on_the_window_and_registers(tmp_path: Path) -> None:
    _store(tmp_path / "store")
    end = START_MS + 2_000 * INTERVAL_MS
    job = FitJob(kind="ridge", symbol="BTCUSDT", interval_ms=INTERVAL_MS, end_ms=end,
                 start_ms=end - 1_500 * INTERVAL_MS, store=str(tmp_path / "store"),
                 registry=str(tmp_path / "registry"), folds=2)
    result = _wait(launch(job, tmp_path / "work", nice=5))
    meta = Registry(tmp_path / "registry").show(result.model_id)
    assert meta["kind"] == "ridge"
    assert meta["data"]["train_start_ms"] >= job.start_ms  # type: ignore[operator]
    assert meta["data"]["train_end_ms"] <= end
    assert 1_300 <= result.rows < 1_500  # the window less the feature warm-up and the last label


def test_a_failing_child_reports_why(tmp_path: Path) -> None:
    job = FitJob(kind="ridge", symbol="NOPEUSDT", interval_ms=INTERVAL_MS, end_ms=START_MS + 1, start_ms=None,
                 store=str(tmp_path / "empty-store"), registry=str(tmp_path / "registry"))
    process = launch(job, tmp_path / "work")
    with pytest.raises(FitFailed, match="NOPEUSDT"):
        _wait(process)
    assert not (tmp_path / "registry").exists() or Registry(tmp_path / "registry").list() == []
