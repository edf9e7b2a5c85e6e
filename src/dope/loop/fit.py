"""One retraining job of the loop: fit a model kind on a window of stored bars and register it.

The trainer service runs each job in a child process (``python -m dope.loop.fit JOB RESULT``) at
low priority, so a fit never takes a core from the live path, and reads the result file when the
child exits. The registry's own staging (a folder renamed into place) means a child killed
mid-fit leaves no half-registered model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dope.errors import UserError
from dope.fileio import atomic_write_json


class FitJob(msgspec.Struct, frozen=True, kw_only=True):
    """What to fit: ``kind`` on ``symbol``'s bars in ``[start_ms, end_ms)`` (start None = everything stored)."""

    kind: str
    symbol: str
    interval_ms: int
    end_ms: int
    start_ms: int | None
    store: str
    registry: str
    params: dict[str, Any] = {}
    folds: int = 3
    horizon: int = 1
    context_symbols: tuple[str, ...] = ()
    parent_id: str = ""


class FitResult(msgspec.Struct, frozen=True, kw_only=True):
    """A registered version (``model_id``) and how long the fit took."""

    model_id: str
    rows: int
    seconds: float


class FitFailed(UserError):
    """The child process failed; the message holds its last words."""


def run_fit(job: FitJob) -> FitResult:
    """Fit and register in this process (what the child runs)."""
    from dope.models.registry import Registry
    from dope.store import BarStore
    from dope.training.pipeline import TrainRequest, train

    began = time.perf_counter()
    request = TrainRequest(job.kind, job.symbol, job.interval_ms, start_ms=job.start_ms, end_ms=job.end_ms,
                           params=job.params, horizon=job.horizon, folds=job.folds,
                           context_symbols=job.context_symbols)
    outcome = train(BarStore(job.store), Registry(job.registry), request)
    return FitResult(model_id=outcome.model_id, rows=outcome.rows, seconds=time.perf_counter() - began)


@dataclass
class FitProcess:
    """A fit running in a child process; :meth:`poll` returns its result once it exited."""

    job: FitJob
    process: subprocess.Popen[bytes]
    result_path: Path
    stderr_path: Path

    def poll(self) -> FitResult | None:
        """None while running; the result, or ``FitFailed`` with the child's stderr, once it exited."""
        if self.process.poll() is None:
            return None
        if self.process.returncode != 0 or not self.result_path.exists():
            raise FitFailed(f"fitting {self.job.kind} up to {self.job.end_ms} failed "
                            f"(exit {self.process.returncode}): {self.last_words()}")
        return msgspec.json.decode(self.result_path.read_bytes(), type=FitResult)

    def last_words(self) -> str:
        """The end of the child's stderr."""
        try:
            return self.stderr_path.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Stop the child (SIGKILL) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def launch(job: FitJob, work_dir: Path, *, nice: int = 10) -> FitProcess:
    """Start ``job`` in a child process at ``nice`` (job and result files under ``work_dir``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    stem = f"fit-{job.kind}-{job.end_ms}"
    job_path, result_path = work_dir / f"{stem}.job.json", work_dir / f"{stem}.result.json"
    stderr_path = work_dir / f"{stem}.stderr"
    result_path.unlink(missing_ok=True)
    atomic_write_json(job_path, msgspec.to_builtins(job))
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "dope.loop.fit", str(job_path), str(result_path)],
                                   stdout=subprocess.DEVNULL, stderr=stderr,
                                   preexec_fn=lambda: os.nice(nice))  # noqa: PLW1509 (no threads run then)
    return FitProcess(job, process, result_path, stderr_path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.loop.fit JOB.json RESULT.json``: fit, register, write the result atomically."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m dope.loop.fit JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = msgspec.json.decode(Path(args[0]).read_bytes(), type=FitJob)
    try:
        result = run_fit(job)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args[1]), msgspec.to_builtins(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
