"""SIGKILL of the trainer mid-fit under ``dope up``: nothing half-registered, and the loop resumes.

The example run (``examples/loop.toml``) is killed where it fits the ridge at 03:00: the trainer gets SIGKILL
while its fit child runs. The supervisor restarts it; the new trainer kills the orphaned child (or takes its
result if it finished meanwhile), fits the job again under the same hold (the source waited), and the loop
goes on to the same promotion as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w

from dope.config import with_overrides
from dope.loop.audit import AUDIT_FILE, AuditLog
from dope.models.registry import Registry
from tests.e2e.test_loop import ENV, RETRAIN_AT, kind, loop_config

pytestmark = pytest.mark.slow


def trainer_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((run_dir / "status.json").read_text())["services"]["trainer"])
    except (OSError, ValueError, KeyError):
        return None


def wait_for_fit(run_dir: Path, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        status = trainer_status(run_dir)
        if status and status["counters"].get("loop.fit_running") == 1:
            return status
        time.sleep(0.1)
    raise AssertionError("the trainer never started its fit")


def alive_fit(pid: int) -> bool:
    try:
        return b"dope.loop.fit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_sigkill_of_the_trainer_mid_fit_leaves_nothing_half_registered_and_the_loop_resumes(tmp_path: Path) -> None:
    config = with_overrides(loop_config(tmp_path), {"collector": {"flow_liveness_ms": 120_000},
                                                    "bus": {"heartbeat_ms": 200},
                                                    "supervisor": {"restart_min_ms": 300}})
    path = tmp_path / "loop.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "dope.cli", "up", "--synthetic", "--config", str(path), "--exit-when-done",
            "--run-dir", str(run_dir)]
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path)
    try:
        status = wait_for_fit(run_dir, proc)
        child = int((tmp_path / "registry" / "loop" / "fits" / "fit.pid").read_text())
        assert alive_fit(child)
        os.kill(int(status["pid"]), signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive_fit(child)  # the orphan did not outlive the restart
    assert trainer_status(run_dir)["restarts"] >= 1  # type: ignore[index]

    registry = Registry(tmp_path / "registry")
    ridges = [m for m in registry.list() if m.get("kind") == "ridge"]
    assert len(ridges) == 1 and "error" not in ridges[0]
    registry.verify(ridges[0]["model_id"])  # whole: every file matches its checksum
    assert not list((tmp_path / "registry" / "loop" / "fits").glob("fit-*.job.json"))  # the job was settled
    audit = AuditLog(tmp_path / "registry" / AUDIT_FILE).read()
    assert [(e.action, kind(e.model_id)) for e in audit][:3] == [("register", "ridge"), ("shadow", "ridge"),
                                                                 ("promote", "ridge")]
    assert audit[0].model_id == ridges[0]["model_id"] and audit[0].time_ms == RETRAIN_AT
    assert registry.champion() == ridges[0]["model_id"]
