"""The loop's fit job: a child process fits a kind on stored bars, registers it with its lineage and
reference sample, and reports the id; a child killed mid-registration leaves nothing half-registered."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

import dope
from dope.features import default_feature_set, training_matrix
from dope.loop.config import LoopConfig
from dope.loop.fit import FitFailed, FitJob, FitResult, NotEnoughBars, fit_job_for, launch
from dope.market.config import SyntheticConfig
from dope.market.synthetic import configured_bars
from dope.models.registry import Registry, RegistryError
from dope.store import BarStore
from dope.training.lineage import bars_sha256

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
    assert result.nice == min(19, os.nice(0) + 5)


def test_the_registered_version_records_its_lineage(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    end = START_MS + 2_000 * INTERVAL_MS
    job = FitJob(kind="ridge", symbol="BTCUSDT", interval_ms=INTERVAL_MS, end_ms=end,
                 start_ms=end - 1_500 * INTERVAL_MS, store=str(tmp_path / "store"),
                 registry=str(tmp_path / "registry"), params={"alpha": 2.0}, folds=2, parent_id="ridge-parent")
    result = _wait(launch(job, tmp_path / "work"))
    meta = Registry(tmp_path / "registry").show(result.model_id)  # checksums verified: lineage is covered
    lineage = meta["lineage"]
    bars = store.read_bars("BTCUSDT", INTERVAL_MS, job.start_ms, end)
    assert lineage["data"]["start_ms"] == job.start_ms and lineage["data"]["end_ms"] == end
    assert lineage["data"]["bars"] == 1_500 and lineage["data"]["rows"] == result.rows
    assert lineage["data"]["bars_sha256"] == bars_sha256(bars)
    assert lineage["feature_set"]["version"] == meta["feature_set"]["version"] == default_feature_set().version
    assert lineage["parent_id"] == "ridge-parent"
    assert lineage["code"]["dope"] == dope.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", lineage["code"]["git_commit"])  # the tests run from a git checkout
    assert lineage["params"] == {"alpha": 2.0}
    assert lineage["training"]["folds"] == 2 and lineage["training"]["horizon"] == 1
    path = tmp_path / "registry" / result.model_id / "metadata.json"
    path.write_text(path.read_text().replace("ridge-parent", "ridge-other!"))
    with pytest.raises(RegistryError, match="modified after registration"):
        Registry(tmp_path / "registry").show(result.model_id)


def test_the_reference_sample_is_the_end_of_the_window_and_its_in_sample_predictions(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    end = START_MS + 2_000 * INTERVAL_MS
    job = FitJob(kind="ridge", symbol="BTCUSDT", interval_ms=INTERVAL_MS, end_ms=end, start_ms=None,
                 store=str(tmp_path / "store"), registry=str(tmp_path / "registry"), folds=2, reference_rows=300)
    result = _wait(launch(job, tmp_path / "work"))
    registry = Registry(tmp_path / "registry")
    reference = registry.reference(result.model_id)
    fs = default_feature_set(INTERVAL_MS)
    X, _, _ = training_matrix(store.read_bars("BTCUSDT", INTERVAL_MS, None, end), fs, 1)
    model, _ = registry.load(result.model_id)
    assert reference.feature_names == fs.names
    np.testing.assert_allclose(reference.features, X[-300:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(reference.predictions, model.predict_many(X[-300:]), rtol=0, atol=1e-12)


def test_fit_job_for_builds_rolling_and_expanding_windows_from_the_config(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    end = START_MS + 2_500 * INTERVAL_MS
    loop = LoopConfig(train_window="5h", min_train_bars=1_000, folds=4, reference_rows=123,
                      params={"random_forest": {"n_estimators": 7, "max_train_rows": 900}})
    rolling = fit_job_for(loop, "random_forest", "BTCUSDT", INTERVAL_MS, end, store, tmp_path / "registry",
                          parent_id="rf-1", context_symbols=("ETHUSDT",))
    assert rolling.start_ms == end - 5 * 3_600_000 and rolling.end_ms == end
    assert rolling.params["n_estimators"] == 7 and rolling.params["max_depth"] == 8  # the loop's defaults below
    assert "max_train_rows" not in rolling.params and rolling.max_train_rows == 900
    assert (rolling.folds, rolling.reference_rows, rolling.parent_id) == (4, 123, "rf-1")
    assert rolling.context_symbols == ("ETHUSDT",) and rolling.registry == str(tmp_path / "registry")
    expanding = fit_job_for(msgspec.structs.replace(loop, window="expanding"), "ridge", "BTCUSDT", INTERVAL_MS, end,
                            str(tmp_path / "store"), Registry(tmp_path / "registry"))
    assert expanding.start_ms is None and expanding.params == {} and expanding.max_train_rows is None


def test_fit_job_for_refuses_a_window_with_too_few_bars(tmp_path: Path) -> None:
    store = _store(tmp_path / "store", bars=800)
    loop = LoopConfig(train_window="30d", min_train_bars=1_000)
    with pytest.raises(NotEnoughBars, match="800 BTCUSDT bars .* fewer than loop.min_train_bars = 1000") as caught:
        fit_job_for(loop, "ridge", "BTCUSDT", INTERVAL_MS, START_MS + 10_000 * INTERVAL_MS, store, tmp_path / "r")
    assert caught.value.bars == 800


@pytest.mark.slow
def test_a_child_killed_mid_registration_leaves_nothing_and_the_job_reruns(tmp_path: Path) -> None:
    _store(tmp_path / "store", bars=1_500)
    registry = Registry(tmp_path / "registry")
    job = FitJob(kind="random_forest", symbol="BTCUSDT", interval_ms=INTERVAL_MS, end_ms=START_MS + 1_500 * INTERVAL_MS,
                 start_ms=None, store=str(tmp_path / "store"), registry=str(registry.root), folds=2,
                 params={"n_estimators": 150, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1})
    fit = launch(job, tmp_path / "work", nice=0)
    staging = _first_staging(registry.root, fit)  # 150 deep trees are being saved: SIGKILL now
    os.kill(fit.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    with pytest.raises(FitFailed, match=f"exit {-signal.SIGKILL}"):
        _wait(fit)
    assert staging.exists() and registry.list() == []
    assert registry.clean_staging() == [staging.name]
    result = _wait(launch(job, tmp_path / "work", nice=0), timeout_s=240)
    assert [m["model_id"] for m in registry.list()] == [result.model_id]
    assert not list(registry.root.glob(".staging-*"))
    registry.verify(result.model_id)


def _first_staging(root: Path, fit, timeout_s: float = 180.0) -> Path:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list(root.glob(".staging-*")) if root.exists() else []
        if found:
            return found[0]
        if fit.process.poll() is not None:
            raise AssertionError(f"the fit ended before it staged its artifact: {fit.last_words()}")
        time.sleep(0.002)
    fit.kill()
    raise AssertionError("the fit never started registering")



def test_a_failing_child_reports_why(tmp_path: Path) -> None:
    job = FitJob(kind="ridge", symbol="NOPEUSDT", interval_ms=INTERVAL_MS, end_ms=START_MS + 1, start_ms=None,
                 store=str(tmp_path / "empty-store"), registry=str(tmp_path / "registry"))
    process = launch(job, tmp_path / "work")
    with pytest.raises(FitFailed, match="NOPEUSDT"):
        _wait(process)
    assert not (tmp_path / "registry").exists() or Registry(tmp_path / "registry").list() == []
