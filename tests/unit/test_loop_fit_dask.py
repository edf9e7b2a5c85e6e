"""A fit job submitted to a real Dask scheduler (a LocalCluster with one worker process): it registers the
model like a local child does, and ``kill`` stops the niced child the task runs on its worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dope.loop.fit import FitFailed, FitJob, FitProcess, FitResult, launch
from dope.models.registry import Registry
from tests.unit.test_loop_fit import INTERVAL_MS, START_MS, _store

distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'dope[dask]')")
psutil = pytest.importorskip("psutil", reason="psutil (a dev dependency) finds the worker's children")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs={"dashboard": False}) as local:
        yield local


def _wait(fit: FitProcess, timeout_s: float = 180.0) -> FitResult:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (result := fit.poll()) is not None:
            return result
        time.sleep(0.05)
    fit.kill()
    raise AssertionError("the Dask fit did not finish in time")


def _fit_children(cluster: Any) -> list[Any]:
    with distributed.Client(cluster, set_as_default=False) as client:
        pids = client.run(lambda: __import__("os").getpid()).values()
    children = [c for pid in pids for c in psutil.Process(pid).children(recursive=True)]
    return [c for c in children if "dope.loop.fit" in " ".join(c.cmdline())]


def test_a_job_on_the_scheduler_registers_its_model(tmp_path: Path, cluster: Any) -> None:
    _store(tmp_path / "store", bars=1_500)
    job = FitJob(kind="ridge", symbol="BTCUSDT", interval_ms=INTERVAL_MS, end_ms=START_MS + 1_500 * INTERVAL_MS,
                 start_ms=None, store=str(tmp_path / "store"), registry=str(tmp_path / "registry"), folds=2)
    result = _wait(launch(job, tmp_path / "unused", nice=7, scheduler=cluster.scheduler_address))
    meta = Registry(tmp_path / "registry").show(result.model_id)
    assert meta["kind"] == "ridge" and meta["lineage"]["data"]["bars"] == 1_500
    assert result.nice >= 7  # the worker's child ran niced
    assert not (tmp_path / "unused").exists()


def test_kill_stops_the_workers_child_and_nothing_is_registered(tmp_path: Path, cluster: Any) -> None:
    _store(tmp_path / "store", bars=1_500)
    job = FitJob(kind="random_forest", symbol="BTCUSDT", interval_ms=INTERVAL_MS,
                 end_ms=START_MS + 1_500 * INTERVAL_MS, start_ms=None, store=str(tmp_path / "store"),
                 registry=str(tmp_path / "registry"), folds=2,
                 params={"n_estimators": 2_000, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1})
    fit = launch(job, tmp_path / "unused", scheduler=cluster.scheduler_address)
    deadline = time.monotonic() + 60
    while not _fit_children(cluster):
        assert time.monotonic() < deadline, "the worker never started the fit's child"
        assert fit.poll() is None
        time.sleep(0.1)
    fit.kill()
    with pytest.raises(FitFailed, match="killed"):
        fit.poll()
    deadline = time.monotonic() + 30
    while _fit_children(cluster):
        assert time.monotonic() < deadline, "the worker's child outlived kill"
        time.sleep(0.1)
    registry = Registry(tmp_path / "registry")
    assert not registry.root.exists() or registry.list() == []
