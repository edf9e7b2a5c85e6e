"""The ``trainer`` service: the DataOps loop (``[loop]``, ``docs/loop.md``), started by ``dope up`` when enabled.

It reads ``bar.*`` (collector) and ``score.*`` (every model service) into a
:class:`~dope.loop.ledger.Ledger`, and at market-time checkpoints (:mod:`dope.loop.schedule`) lets the
:class:`~dope.loop.controller.Controller` judge the shadow candidate and the rollback watch. When a retrain
is due it fits the next loop kind on the store the collector writes, in a niced child process
(:func:`dope.loop.fit.launch`, at most one at a time, killed after ``fit_timeout``; without the barrier, while
bars flow, the trainer itself is niced and the child runs under ``SCHED_IDLE``), and deploys the new
version as the shadow. A failed fit is logged, counted and audited; the service goes on.

**Barrier** (replayed and synthetic sources, ``[loop] barrier``): the trainer publishes
:class:`~dope.messages.LoopProgress` on its endpoint; the collector's source stops at the next checkpoint
(:class:`dope.services.flow.TrainerHold`) until the trainer, having settled, fitted and changed roles,
names the next one. Nothing moves meanwhile, so every role change applies from the same bar in every run.

**Restart**: state comes back from the registry's roles and the audit log; a fit child left by a killed
trainer is killed (its pid is in ``<registry>/loop/fits/fit.pid``) and its job launched again (its
registration is staged, so nothing half-registered is ever seen).

    python -m dope.services.trainer --config dope.toml
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from dope.config import DopeConfig
from dope.errors import UserError
from dope.loop.controller import Controller
from dope.loop.fit import (
    ChildFit,
    FitJob,
    FitProcess,
    FitResult,
    NotEnoughBars,
    fit_job_for,
    job_file_name,
    launch,
)
from dope.loop.health import retrain_request
from dope.loop.ledger import Ledger
from dope.loop.schedule import Schedule, checkpoint_bars, next_multiple
from dope.messages import AnyMessage, Bar, LoopProgress, ModelHealth, Prediction, Score
from dope.models.registry import Registry
from dope.services.base import (
    Service,
    endpoint_of,
    model_endpoints,
    service_main,
    service_publisher,
    service_subscriber,
)
from dope.services.rendezvous import shadow_rule
from dope.store import BarStore
from dope.transport import Publisher, Subscriber

READY_TIMEOUT_S: Final = 10.0
"""Wall time a checkpoint waits for the bar and the judged models' scores before it goes on (counted)."""
PROGRESS_EVERY_S: Final = 0.2
STORE_WAIT_S: Final = 5.0
PID_FILE: Final = "fit.pid"


def loop_symbol(config: DopeConfig) -> str:
    """The symbol the loop fits and judges on: ``[loop] symbol``, else the collector's first."""
    return config.loop.symbol or config.collector.symbols[0]


def uses_barrier(config: DopeConfig) -> bool:
    """Whether the source waits for the trainer: ``[loop] barrier`` and a replayed or synthetic source."""
    return config.loop.barrier and config.collector.source != "binance"


class TrainerService(Service):
    """Schedules fits, deploys candidates as shadows, runs the gate, rolls back and retires."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], config: DopeConfig,
                 *, first_start: bool = False) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=config.bus.heartbeat_ms)
        self.config, self.loop = config, config.loop
        self.symbol, self.interval_ms = loop_symbol(config), config.bars.interval_ms
        self.registry = Registry(config.registry.path)
        self.ledger = Ledger(self.symbol, self.interval_ms, horizon=config.rendezvous.horizon_bars,
                             rule=shadow_rule(config.trader),
                             keep_bars=2 * (self.loop.max_candidate_bars + self.loop.min_bars))
        self.controller = Controller(self.loop, self.registry, self.ledger, horizon=config.rendezvous.horizon_bars)
        step = checkpoint_bars(self.loop.min_bars) * self.interval_ms
        self.schedule = Schedule(step, self.loop.retrain_every_ms, self.loop.min_retrain_gap_ms)
        self.barrier = uses_barrier(config)
        self.work_dir = self.registry.root / "loop" / "fits"
        self.hold_ms = 0 if (first_start and self.barrier) else -1
        self.next_checkpoint: int | None = None
        self.pending: int | None = None
        self.pending_since = 0.0
        self.pending_models: list[str] = []
        self.fit: FitProcess | None = None
        self.fit_at, self.fit_began, self.fit_reason = 0, 0.0, ""
        self._kind_turn = 0
        self._progress_at = 0.0
        self.predicted_until = -1  # open time of the rendezvous' newest prediction of the loop's symbol
        self._alarms: set[tuple[str, int]] = set()  # (symbol, alarm_since) of drift alarms already acted on
        self.counters.update(fits_started=0, fits_succeeded=0, fits_failed=0, fits_skipped=0, fits_killed=0,
                             checkpoints=0, barrier_timeouts=0, barrier_late=0, retrain_requests=0)

    # ---- start -------------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Kill a fit child a killed predecessor left, recover the loop's state, resume an interrupted fit."""
        self._kill_orphan()
        if not self.barrier:  # off the bars' path: never take a core from the services that are on it
            os.nice(self.loop.nice)
        self.controller.recover()
        found = self._interrupted_job()
        if found is not None:
            job, job_path = found
            self.schedule.start(job.end_ms, job.end_ms)  # this job is the retrain of its point
            self.next_checkpoint = self.pending = job.end_ms
            self.pending_since = time.monotonic()
            self.hold_ms = job.end_ms if self.barrier else -1
            self.fit_at, self.fit_reason = job.end_ms, "scheduled retrain (resumed after a restart)"
            result = _result_of(job_path)
            if result is not None:  # the child finished after its parent died: take its model
                self.log.info("the fit of %s up to %d finished after the previous trainer died: %s", job.kind,
                              job.end_ms, result.model_id)
                self._fit_done(job, job_path, result, "")
            else:
                self.log.info("fitting %s up to %d again: a previous trainer died during it", job.kind, job.end_ms)
                self._launch(job, self.fit_reason)
        self.publish_progress()

    def _kill_orphan(self) -> None:
        pid_file = self.work_dir / PID_FILE
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"dope.loop.fit" in cmdline:
                os.kill(pid, signal.SIGKILL)
                self.count("orphans_killed")
                self.log.warning("killed fit child %d left by a previous trainer", pid)
        pid_file.unlink(missing_ok=True)

    def _interrupted_job(self) -> tuple[FitJob, Path] | None:
        """The job a previous trainer left (its job file is removed once the outcome is audited)."""
        jobs = sorted(self.work_dir.glob("fit-*.job.json"), key=lambda p: p.stat().st_mtime)
        for stale in jobs[:-1]:
            _remove_job_files(stale)
        if not jobs:
            return None
        try:
            return msgspec.json.decode(jobs[-1].read_bytes(), type=FitJob), jobs[-1]
        except (msgspec.DecodeError, OSError) as exc:
            self.problems.report("bad_job", f"cannot read the interrupted job {jobs[-1]}: {exc}")
            _remove_job_files(jobs[-1])
            return None

    # ---- input -------------------------------------------------------------------------------------
    def handle(self, msg: AnyMessage) -> None:
        if isinstance(msg, Bar):
            self._on_bar(msg)
        elif isinstance(msg, Score):
            prediction = math.nan if msg.abstained else msg.prediction
            self.ledger.add_score(msg.symbol, msg.open_time, msg.model_id, prediction)
        elif isinstance(msg, ModelHealth):
            self._on_health(msg)
        elif isinstance(msg, Prediction) and msg.symbol == self.symbol:
            self.predicted_until = max(self.predicted_until, msg.open_time)
        self.step()

    def _on_health(self, msg: ModelHealth) -> None:
        """A drift alarm of the decoy's monitor asks for an early retrain, once per alarm."""
        request = retrain_request(msg)
        if request is None or not self.loop.retrain_on_drift or (msg.symbol, msg.alarm_since) in self._alarms:
            return
        self._alarms.add((msg.symbol, msg.alarm_since))
        self.request_retrain(*request)

    def _on_bar(self, bar: Bar) -> None:
        self.ledger.add_bar(bar.symbol, bar.open_time, bar.interval_ms, bar.open, bar.close)
        if bar.symbol != self.symbol or bar.interval_ms != self.interval_ms:
            return
        if self.next_checkpoint is None:
            self.schedule.start(bar.open_time, self.controller.last_retrain_ms())
            self.next_checkpoint = next_multiple(bar.open_time, self.schedule.step_ms)
            self._hold(self.next_checkpoint)
        self._check_due()

    def _check_due(self) -> None:
        point = self.next_checkpoint
        if self.pending is None and point is not None and self.ledger.newest_bar >= point - self.interval_ms:
            if self.barrier and self.ledger.newest_bar >= point:
                self.count("barrier_late")  # the source passed the hold (the trainer was late or restarted)
            self.pending, self.pending_since = point, time.monotonic()
            # while the features warm up no model answers: nothing to wait for
            self.pending_models = self.controller.judged_models() if self.ledger.scored else []

    def on_idle(self) -> None:
        self.step()
        if time.monotonic() - self._progress_at >= PROGRESS_EVERY_S:
            self.publish_progress()

    def request_retrain(self, reason: str, time_ms: int) -> bool:
        """Ask for an early retrain (a drift alarm): it runs at the next checkpoint, at most one per
        ``min_retrain_gap`` of market time. Returns whether it was taken."""
        self.count("retrain_requests")
        taken = self.schedule.request_retrain(reason, time_ms)
        self.log.info("retrain requested at %d (%s): %s", time_ms, reason, "taken" if taken else "too soon, ignored")
        return taken

    # ---- the loop ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance: watch a running fit, or run the pending checkpoint once its bars and scores are in."""
        if self.fit is not None:
            self._watch_fit()
            return
        if self.pending is None:
            return
        if not (self.ledger.ready(self.pending, self.pending_models) and self._rendezvous_reached(self.pending)):
            if time.monotonic() - self.pending_since < READY_TIMEOUT_S:
                return
            self.count("barrier_timeouts")
            self.problems.report("barrier_timeout", f"checkpoint {self.pending}: the bar, a judged model's "
                                 f"score or the rendezvous' prediction did not come within {READY_TIMEOUT_S:.0f} s; going on without it")
        self._checkpoint(self.pending)

    def _rendezvous_reached(self, time_ms: int) -> bool:
        """With the barrier: whether the rendezvous has published its prediction of the bar closing at
        ``time_ms``. Its rounds open when their features arrive, and it applies new roles to every round it
        opens afterwards: a role changed while it still works through earlier bars (it can lag the models
        under load) would reach those bars too, at a bar that depends on the load. No prediction seen yet
        (warm-up, or no rendezvous in the stack): nothing to wait for."""
        if not self.barrier or self.predicted_until < 0 or not self.pending_models:
            return True
        return self.predicted_until >= time_ms - self.interval_ms

    def _checkpoint(self, time_ms: int) -> None:
        self.count("checkpoints")
        self.controller.checkpoint(time_ms)
        if self.schedule.retrain_due(time_ms) and self._start_fit(time_ms):
            return
        self._release(time_ms)

    def _release(self, time_ms: int) -> None:
        """The checkpoint at ``time_ms`` is done: hold at the next one and let the source go."""
        self.pending = None
        self.next_checkpoint = self.schedule.next_point(time_ms)
        self._hold(self.next_checkpoint)
        self._check_due()

    def _hold(self, time_ms: int) -> None:
        if self.barrier:
            self.hold_ms = time_ms
            self.publish_progress()

    def publish_progress(self) -> None:
        """Tell the source where to stop (repeated every 0.2 s: a restarted collector hears it too)."""
        self._progress_at = time.monotonic()
        self.publish(LoopProgress(symbol=self.symbol, event_time=max(0, self.ledger.newest_bar),
                                  hold_ms=self.hold_ms, every_ms=self.schedule.step_ms))

    # ---- fitting -----------------------------------------------------------------------------------
    def _start_fit(self, time_ms: int) -> bool:
        """Launch the next kind's fit on the bars before ``time_ms``; False when skipped (too few bars)."""
        reason = self.schedule.retrained(time_ms)
        kind = self._next_kind()
        if kind is None:
            self.problems.report("no_kind", "no loop kind to retrain: set [loop] kinds or promote a champion")
            return False
        self._wait_for_store(time_ms)
        champion = self.controller.champion()
        parent = champion if champion and self.controller.kind_of(champion) == kind else ""
        try:
            job = fit_job_for(self.loop, kind, self.symbol, self.interval_ms, time_ms, self.config.store.path,
                              self.config.registry.path, parent,
                              tuple(self.config.featurizer.context_symbols))
        except NotEnoughBars as exc:
            self.count("fits_skipped")
            self.log.info("retrain of %s at %d skipped: %s", kind, time_ms, exc)
            return False
        job = msgspec.structs.replace(job, horizon=self.config.rendezvous.horizon_bars)
        self._launch(job, reason)
        return True

    def _launch(self, job: FitJob, reason: str) -> None:
        self.fit = launch(job, self.work_dir, nice=self.loop.nice, scheduler=self.loop.scheduler)
        pid = self.fit.process.pid if isinstance(self.fit, ChildFit) else 0  # 0: a task on the Dask scheduler
        if pid and not self.barrier:  # bars flow during the fit: it runs only on CPU time the live path leaves idle
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        if pid:
            (self.work_dir / PID_FILE).write_text(str(pid))
        self.fit_at, self.fit_began, self.fit_reason = job.end_ms, time.monotonic(), reason
        self.count("fits_started")
        self.log.info("fitting %s on %s up to %d (%s), %s", job.kind, self.symbol, job.end_ms, reason,
                      f"pid {pid}" if pid else f"on {self.loop.scheduler}")

    def _next_kind(self) -> str | None:
        """The loop's kinds in turn (one candidate at a time); none configured: the champion's kind."""
        kinds = list(self.loop.kinds)
        if not kinds:
            champion = self.controller.champion()
            return self.controller.kind_of(champion) if champion else None
        kind = kinds[self._kind_turn % len(kinds)]
        self._kind_turn += 1
        return kind

    def _wait_for_store(self, end: int) -> None:
        """Wait until the bar before ``end`` is stored (the collector writes its bars when the barrier holds
        it); without a barrier, take what is there."""
        store = BarStore(self.config.store.path)
        deadline = time.monotonic() + (STORE_WAIT_S if self.barrier else 0.0)
        while time.monotonic() <= deadline:
            last = store.last_bar(self.symbol, self.interval_ms)
            if last is not None and int(last["open_time"]) >= end - self.interval_ms:
                return
            time.sleep(0.05)

    def _watch_fit(self) -> None:
        fit = self.fit
        assert fit is not None
        job_path = self.work_dir / job_file_name(fit.job)
        try:
            result = fit.poll()
        except UserError as exc:
            self._fit_done(fit.job, job_path, None, str(exc))
            return
        if result is not None:
            self._fit_done(fit.job, job_path, result, "")
        elif (time.monotonic() - self.fit_began) * 1000 > self.loop.fit_timeout_ms:
            fit.kill()
            self.count("fits_killed")
            self._fit_done(fit.job, job_path, None, f"killed after fit_timeout {self.loop.fit_timeout}")

    def _fit_done(self, job: FitJob, job_path: Path, result: FitResult | None, failure: str) -> None:
        """Audit the fit's outcome (a new shadow, or a failure), forget its files, release the checkpoint."""
        self.fit = None
        (self.work_dir / PID_FILE).unlink(missing_ok=True)
        at = self.fit_at if self.barrier else max(self.fit_at, self.ledger.newest_bar + self.interval_ms)
        if result is None:
            self.count("fits_failed")
            self.problems.report("fit_failed", f"{job.kind} up to {job.end_ms}: {failure}")
            self.controller.fit_failed(job.kind, at, failure)
        else:
            self.count("fits_succeeded")
            self.log.info("fitted %s on %d rows in %.1f s", result.model_id, result.rows, result.seconds)
            self.controller.deployed(result.model_id, at, reason=self.fit_reason, evidence=self._lineage(job, result))
        _remove_job_files(job_path)
        self._release(self.fit_at)

    def _lineage(self, job: FitJob, result: FitResult) -> dict[str, Any]:
        """What the audit keeps of a registration: the training data and where the version comes from."""
        try:
            meta = self.registry.show(result.model_id)
        except UserError as exc:
            return {"error": str(exc), "parent": job.parent_id}
        return {"parent": job.parent_id, "rows": result.rows, "fit_seconds": round(result.seconds, 3),
                "data": meta.get("data", {}), "params": meta.get("params", {}),
                "feature_set_version": meta.get("feature_set", {}).get("version"),
                "artifact_sha256": meta.get("artifact_sha256"), "lineage": meta.get("lineage", {})}

    # ---- stop and report ---------------------------------------------------------------------------
    def finish(self) -> None:
        """On stop: kill a running fit (its job file stays: the next start launches it again)."""
        if self.fit is not None:
            self.fit.kill()
            (self.work_dir / PID_FILE).unlink(missing_ok=True)

    def extra_counters(self) -> Mapping[str, int]:
        counts = {f"loop.{k}": v for k, v in self.controller.counters.items()}
        counts.update({"loop.hold_ms": self.hold_ms, "loop.fit_running": int(self.fit is not None),
                       "loop.ignored_retrain_requests": self.schedule.ignored_requests,
                       "loop.late_inputs": self.ledger.late})
        return counts


def _result_of(job_path: Path) -> FitResult | None:
    """The result a fit child wrote beside its job file, if it finished."""
    path = job_path.with_name(job_path.name.replace(".job.", ".result."))
    try:
        return msgspec.json.decode(path.read_bytes(), type=FitResult)
    except (OSError, msgspec.DecodeError):
        return None


def _remove_job_files(job_path: Path) -> None:
    stem = job_path.name.removesuffix(".job.json")
    for suffix in (".job.json", ".result.json", ".stderr"):
        job_path.with_name(stem + suffix).unlink(missing_ok=True)


def build(config: DopeConfig, **overrides: Any) -> TrainerService:
    """The trainer of ``config`` (``[loop]``), publishing on ``services.trainer``."""
    name = overrides.get("name") or config.loop.service_name
    endpoints = [endpoint_of(config, "collector"), *model_endpoints(config), endpoint_of(config, "decoy"),
                 endpoint_of(config, "rendezvous")]
    subscriber = service_subscriber(config, ["bar.", "score.", "health.", "prediction."],
                                    list(dict.fromkeys(endpoints)))
    publisher = service_publisher(config, name, endpoint_of(config, "trainer"))
    return TrainerService(name, publisher, [subscriber], config, first_start=bool(overrides.get("first_start")))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--first-start", action="store_true",
                        help="the run's first start (dope up): hold the source at the first checkpoint at once")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.trainer --config FILE``."""
    return service_main(build, argv, prog="dope.services.trainer", add_arguments=_arguments, default_name="trainer")


if __name__ == "__main__":
    raise SystemExit(main())
