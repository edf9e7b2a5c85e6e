"""One retraining job of the loop: fit a model kind on a window of stored bars and register it.

The trainer service builds a job with :func:`fit_job_for` and runs it with :func:`launch`: in a
child process (``python -m dope.loop.fit JOB RESULT [NICE]``) at low priority, so a fit never
takes a core from the live path, or on a Dask scheduler when ``[loop] scheduler`` names one. It
polls the returned :class:`FitProcess` and reads the result once the fit ended. The registry's own
staging (a folder renamed into place) means a fit killed mid-way leaves no half-registered model;
each fit first removes the staging folders of killed ones (:meth:`Registry.clean_staging`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from dope.errors import UserError
from dope.fileio import atomic_write_json

if TYPE_CHECKING:
    from dope.loop.config import LoopConfig
    from dope.models.registry import Registry
    from dope.store import BarStore

LOOP_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "random_forest": {"n_estimators": 50, "max_depth": 8, "min_samples_leaf": 50, "max_features": 0.5,
                      "max_samples": 0.5, "n_jobs": 2, "max_train_rows": 20_000},
}
"""The loop's defaults per kind, under ``[loop.params.KIND]``: a retrain of 30 days of 10 s bars stays
under a minute on 2 cores (``bench/bench_retrain.py``). ``max_train_rows`` caps the rows one fit sees
(evenly spaced over the window); the other keys are the model's parameters."""
POLL_S: Final = 0.2


class FitJob(msgspec.Struct, frozen=True, kw_only=True):
    """What to fit: ``kind`` on ``symbol``'s bars in ``[start_ms, end_ms)`` (start None = everything stored).

    ``parent_id`` is the model this one retrains ("" for none); ``reference_rows`` feature vectors from
    the end of the window are saved with it for drift monitors; ``max_train_rows`` caps one fit's rows
    (None: the pipeline's default for the kind).
    """

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
    reference_rows: int = 2_000
    max_train_rows: int | None = None


class FitResult(msgspec.Struct, frozen=True, kw_only=True):
    """A registered version (``model_id``), its rows, how long the fit took and at what niceness it ran."""

    model_id: str
    rows: int
    seconds: float
    nice: int = 0


class FitFailed(UserError):
    """The fit failed; the message holds its last words."""


class NotEnoughBars(UserError):
    """The window holds fewer bars than ``[loop] min_train_bars``: the trainer skips this retrain."""

    def __init__(self, message: str, bars: int) -> None:
        super().__init__(message)
        self.bars = bars


def fit_job_for(loop: LoopConfig, kind: str, symbol: str, interval_ms: int, end_ms: int,
                store: BarStore | str | Path, registry: Registry | str | Path, parent_id: str = "",
                context_symbols: tuple[str, ...] = ()) -> FitJob:
    """The job that retrains ``kind`` on ``symbol``'s bars before ``end_ms`` as ``loop`` says.

    The window is ``[end_ms - train_window, end_ms)`` (``rolling``) or every stored bar before
    ``end_ms`` (``expanding``). Parameters: :data:`LOOP_PARAMS`, then ``loop.params[kind]``.
    ``NotEnoughBars`` when the window holds fewer than ``loop.min_train_bars`` bars.
    """
    from dope.models.registry import Registry
    from dope.store import BarStore

    bar_store = store if isinstance(store, BarStore) else BarStore(store)
    registry_root = registry.root if isinstance(registry, Registry) else Path(registry)
    start_ms = end_ms - loop.train_window_ms if loop.window == "rolling" else None
    count = len(bar_store.read_bars(symbol, interval_ms, start_ms, end_ms).index)
    if count < loop.min_train_bars:
        where = "before" if start_ms is None else f"in [{start_ms}, {end_ms}) before"
        raise NotEnoughBars(f"{count} {symbol} bars stored {where} {end_ms}: fewer than loop.min_train_bars = "
                            f"{loop.min_train_bars}, so {kind} is not retrained now", count)
    params = {**LOOP_PARAMS.get(kind, {}), **loop.params.get(kind, {})}
    max_train_rows = params.pop("max_train_rows", None)
    return FitJob(kind=kind, symbol=symbol, interval_ms=interval_ms, end_ms=end_ms, start_ms=start_ms,
                  store=str(bar_store.root), registry=str(registry_root), params=params,
                  folds=loop.folds, context_symbols=context_symbols, parent_id=parent_id,
                  reference_rows=loop.reference_rows, max_train_rows=max_train_rows)


def run_fit(job: FitJob) -> FitResult:
    """Fit and register in this process (what the child, or the Dask worker's child, runs)."""
    from dope.models.registry import Registry
    from dope.store import BarStore
    from dope.training.pipeline import TrainRequest, train

    began = time.perf_counter()
    registry = Registry(job.registry)
    registry.clean_staging()
    request = TrainRequest(job.kind, job.symbol, job.interval_ms, start_ms=job.start_ms, end_ms=job.end_ms,
                           params=job.params, horizon=job.horizon, folds=job.folds,
                           max_train_rows=job.max_train_rows, context_symbols=job.context_symbols,
                           parent_id=job.parent_id, reference_rows=job.reference_rows)
    outcome = train(BarStore(job.store), registry, request)
    return FitResult(model_id=outcome.model_id, rows=outcome.rows, seconds=time.perf_counter() - began,
                     nice=os.nice(0))


class FitProcess(ABC):
    """A fit running elsewhere (a child process, or a Dask task): poll it until it returns its result."""

    job: FitJob

    @abstractmethod
    def poll(self) -> FitResult | None:
        """None while running; the result, or ``FitFailed`` saying why, once it ended."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the fit; whatever it had not registered yet is never registered."""

    @abstractmethod
    def last_words(self) -> str:
        """The end of what the fit wrote to stderr (or its error)."""


class ChildFit(FitProcess):
    """A fit in a child process of this one."""

    def __init__(self, job: FitJob, process: subprocess.Popen[bytes], result_path: Path,
                 stderr_path: Path) -> None:
        self.job, self.process, self.result_path, self.stderr_path = job, process, result_path, stderr_path

    def poll(self) -> FitResult | None:
        if self.process.poll() is None:
            return None
        if self.process.returncode != 0 or not self.result_path.exists():
            raise FitFailed(f"fitting {self.job.kind} up to {self.job.end_ms} failed "
                            f"(exit {self.process.returncode}): {self.last_words()}")
        return msgspec.json.decode(self.result_path.read_bytes(), type=FitResult)

    def last_words(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class DaskFit(FitProcess):
    """A fit submitted to a Dask scheduler; the task runs it in a niced child process on its worker."""

    def __init__(self, job: FitJob, scheduler: str, client: Any, future: Any, cancel: Any) -> None:
        self.job, self.scheduler, self._client, self._future, self._cancel = job, scheduler, client, future, cancel
        self._error = ""

    def poll(self) -> FitResult | None:
        if self._error:
            raise FitFailed(self._error)
        if not self._future.done():
            return None
        try:
            result: FitResult = self._future.result()
            return result
        except Exception as exc:  # the task's own error, re-raised by Dask
            self._error = f"fitting {self.job.kind} up to {self.job.end_ms} on {self.scheduler} failed: {exc}"
            raise FitFailed(self._error) from None
        finally:
            self._client.close()

    def last_words(self) -> str:
        return self._error

    def kill(self) -> None:
        """Tell the task to SIGKILL its child, cancel the future and close the connection."""
        if self._client.status == "running":
            self._cancel.set()
            self._future.cancel()
            self._client.close()
            self._error = f"fitting {self.job.kind} up to {self.job.end_ms} on {self.scheduler} was killed"


def job_file_name(job: FitJob) -> str:
    """The name of the file a local fit's job is written to (its result and stderr sit beside it)."""
    return f"fit-{job.kind}-{job.end_ms}.job.json"


def launch(job: FitJob, work_dir: Path, *, nice: int = 10, scheduler: str = "") -> FitProcess:
    """Start ``job`` in a child process at ``nice`` (job, result and stderr files under ``work_dir``).

    With ``scheduler`` (a Dask scheduler's address) the job is a task there instead, which runs it in
    a child process of its worker at ``nice``; ``kill`` stops that child.
    """
    if scheduler:
        return _submit(job, scheduler, nice)
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path = work_dir / job_file_name(job)
    stem = job_path.name.removesuffix(".job.json")
    result_path = work_dir / f"{stem}.result.json"
    stderr_path = work_dir / f"{stem}.stderr"
    result_path.unlink(missing_ok=True)
    atomic_write_json(job_path, msgspec.to_builtins(job))
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dope.loop.fit", str(job_path), str(result_path), str(nice)],
            stdout=subprocess.DEVNULL, stderr=stderr)
    return ChildFit(job, process, result_path, stderr_path)


def _submit(job: FitJob, scheduler: str, nice: int) -> DaskFit:
    try:
        from distributed import Client, Event
    except ImportError:
        raise UserError("loop.scheduler is set but Dask's distributed is not installed "
                        "(pip install 'dope[dask]', or leave loop.scheduler empty)") from None
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise FitFailed(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    name = f"dope-fit-{job.kind}-{job.end_ms}-{uuid.uuid4().hex[:8]}"
    cancel = Event(f"{name}-cancel", client=client)  # type: ignore[no-untyped-call]
    future = client.submit(_fit_on_worker, job, nice, cancel.name, key=name, pure=False)
    return DaskFit(job, scheduler, client, future, cancel)


def _fit_on_worker(job: FitJob, nice: int, cancel_name: str) -> FitResult:
    """The Dask task: the job in a niced child process of the worker, killed when the event is set."""
    from distributed import Event

    cancel = Event(cancel_name)  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory(prefix="dope-fit-") as work_dir:
        fit = launch(job, Path(work_dir), nice=nice)
        while (result := fit.poll()) is None:
            if cancel.is_set():  # type: ignore[no-untyped-call]
                fit.kill()
                raise FitFailed(f"fitting {job.kind} up to {job.end_ms} was cancelled")
            time.sleep(POLL_S)
        return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.loop.fit JOB.json RESULT.json [NICE]``: lower priority, fit, register, write the result."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or (len(args) == 3 and not args[2].lstrip("-").isdigit()):
        print("usage: python -m dope.loop.fit JOB.json RESULT.json [NICE]", file=sys.stderr)
        return 2
    if len(args) == 3:
        os.nice(int(args[2]))  # before the fit's imports and threads: all of them run at this priority
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
