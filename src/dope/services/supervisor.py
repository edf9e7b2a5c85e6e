"""The supervisor behind ``dope up``: every service as its own process, watched, restarted, stopped.

From one configuration it

1. trains default models into an empty registry (:func:`bootstrap_registry`), and deploys every
   model that holds a role when ``[[models.deploy]]`` is empty (:func:`default_deployments`);
2. gives the run an id (``bus.run_id``: every message carries it, subscribers drop other runs'),
   places every endpoint left at its built-in default or asking for a loopback port 0 on an
   ``ipc://`` socket under the run directory (:func:`place_endpoints`: no other run can take it,
   no port is picked and released), and writes the effective configuration to
   ``<run dir>/config.json`` (every service reads that one file);
3. starts each service as ``python -m dope.services.<module> --config <run dir>/config.json --name N``
   in the configured order, waits until each has sent a heartbeat ("ready"), and starts the
   collector last, holding its source until its subscribers are connected;
4. watches heartbeats (one subscriber to every endpoint), restarts a crashed service with
   exponential backoff (exit status 0 = finished, 2 = configuration error: not restarted),
   publishes health in ``<run dir>/status.json`` and on a Prometheus endpoint;
5. on SIGTERM/SIGINT stops the collector first, then the rest: SIGTERM, then SIGKILL after
   ``stop_timeout_ms``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final, Protocol

import msgspec

from dope.config import BusConfig, DopeConfig, ModelDeployConfig, ServicesConfig, with_overrides
from dope.errors import UserError
from dope.fileio import try_lock
from dope.models.kinds import allow_env
from dope.services.base import SERVICE_NAMES, endpoint_of, model_service_name
from dope.services.metrics import MetricsServer, ServiceMetrics, parse_address
from dope.transport import ZmqSubscriber, client_curve

log = logging.getLogger("dope.supervisor")

STATUS_FILE: Final = "status.json"
CONFIG_FILE: Final = "config.json"
LOCK_FILE: Final = "supervisor.lock"
SOCKET_DIR: Final = "bus"
IPC_PATH_MAX: Final = 107
"""Bytes of an ``ipc://`` socket path Linux accepts (``sun_path`` holds 108 with the final NUL)."""
SOCKET_NAME_MAX: Final = 24
BAR_READERS: Final = frozenset({"featurizer", "rendezvous", "trader", "dashboard", "trainer"})
"""Services that subscribe to the collector's bars (model services do when ``reads_bars`` says so)."""
DEPLOYED_ROLES: Final = ("champion", "challenger", "shadow", "canary")
SERVICE_ENV: Final = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                      "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


# ---- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceSpec:
    """One process to run: module, name, endpoint it heartbeats on, extra arguments."""

    name: str
    module: str
    endpoint: str
    args: tuple[str, ...] = ()
    first_args: tuple[str, ...] = ()
    """Arguments for the first start only (e.g. the featurizer skips its catch-up)."""
    is_source: bool = False
    reads_bars: bool = False
    """Subscribes to the collector's bars: the collector waits for it before its first bar."""


def module_exists(module: str) -> bool:
    """Whether ``module`` can be imported (a service not written yet is skipped, with a log line)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def plan_services(config: DopeConfig, *, exists: Callable[[str], bool] = module_exists) -> list[ServiceSpec]:
    """The processes of ``[supervisor] services`` in order; ``models`` expands to one per deployment.

    The collector holds its source until every planned bar reader (and the supervisor) subscribed.
    """
    specs: list[ServiceSpec] = []
    for entry in planned_services(config):
        if entry == "models":
            specs += [_model_spec(config, i) for i in range(len(config.models.deploy))]
        elif entry not in SERVICE_NAMES:
            raise ValueError(f"supervisor.services: unknown service {entry!r} "
                             f"(known: models, {', '.join(SERVICE_NAMES)})")
        elif exists(f"dope.services.{entry}"):
            specs.append(_named_spec(config, entry))
        else:
            log.warning("service %s skipped: module dope.services.%s is not available", entry, entry)
    readers = sum(1 for s in specs if s.reads_bars) + 1  # + the supervisor
    return [replace(s, args=("--wait-subscribers", str(readers))) if s.is_source else s for s in specs]


def planned_services(config: DopeConfig) -> list[str]:
    """``[supervisor] services``, with the loop's ``trainer`` before the collector when ``[loop] enabled``."""
    services = list(config.supervisor.services)
    if config.loop.enabled and "trainer" not in services:
        at = services.index("collector") if "collector" in services else len(services)
        services.insert(at, "trainer")
    return services


def _model_spec(config: DopeConfig, index: int) -> ServiceSpec:
    from dope.services.model import reads_bars as model_reads_bars

    return ServiceSpec(model_service_name(config, index), "dope.services.model", config.models.deploy[index].endpoint,
                       ("--deploy", str(index)), reads_bars=model_reads_bars(config, index))


def _named_spec(config: DopeConfig, entry: str) -> ServiceSpec:
    first = ("--no-catch-up",) if entry in ("featurizer", "trader") else ("--first-start",) if entry == "trainer" else ()
    return ServiceSpec(_configured_name(config, entry), f"dope.services.{entry}", endpoint_of(config, entry),
                       first_args=first, is_source=entry == "collector", reads_bars=entry in BAR_READERS)


def _configured_name(config: DopeConfig, entry: str) -> str:
    section = getattr(config, entry, None)
    return str(getattr(section, "service_name", "") or entry)


# ---- ports, models, the effective configuration ------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Ports:
    """Hands out distinct free ports: each stays bound here until :meth:`release`."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def take(self, host: str) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host if host != "*" else "0.0.0.0", 0))
        self._held.append(sock)
        return int(sock.getsockname()[1])

    def endpoint(self, endpoint: str) -> str:
        if endpoint.startswith("tcp://") and endpoint.rsplit(":", 1)[-1] in ("0", "*"):
            host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
            return f"tcp://{host}:{self.take(host)}"
        return endpoint

    def release(self) -> None:
        for sock in self._held:
            sock.close()


def resolve_ports(config: DopeConfig) -> DopeConfig:
    """``config`` with every ``tcp://host:0`` (or ``:*``) endpoint, and a metrics port 0, given a distinct free port."""
    raw = msgspec.to_builtins(config)
    ports = _Ports()
    try:
        for key in ("publish", "snapshot"):
            raw["bus"][key] = ports.endpoint(raw["bus"][key])
        raw["services"] = {k: ports.endpoint(v) for k, v in raw["services"].items()}
        for deploy in raw["models"]["deploy"]:
            deploy["endpoint"] = ports.endpoint(deploy["endpoint"])
        metrics = raw["supervisor"]["metrics"]
        if metrics and parse_address(metrics)[1] == 0:
            host = parse_address(metrics)[0]
            raw["supervisor"]["metrics"] = f"{host}:{ports.take(host)}"
    finally:
        ports.release()
    return with_overrides(DopeConfig(), raw, origin="supervisor")


def new_run_id() -> str:
    """A fresh run id: the start time (UTC) and 6 random hex digits, e.g. ``20261206T101500-3fa2c1``."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def lock_run_dir(run_dir: Path) -> IO[bytes]:
    """Hold ``<run dir>/supervisor.lock`` for the life of the handle; UserError when another ``dope up`` holds it.

    Two runs in one directory would overwrite each other's status and ``ipc://`` sockets.
    """
    try:
        return try_lock(Path(run_dir) / LOCK_FILE)
    except BlockingIOError:
        raise UserError(f"another `dope up` is running in {run_dir} (it holds {Path(run_dir) / LOCK_FILE}): "
                        "stop it, or give this run another --run-dir") from None


def _is_private(endpoint: str, default: str) -> bool:
    """Whether ``dope up`` may place ``endpoint`` itself: the built-in default, or loopback with any port."""
    if endpoint == default:
        return True
    if not endpoint.startswith("tcp://") or endpoint.rsplit(":", 1)[-1] not in ("0", "*"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def socket_dir(run_dir: Path, run_id: str) -> Path:
    """Where the run's ``ipc://`` sockets live: ``<run dir>/bus``, or ``<tmp>/dope-<run id>`` (mode 0700)
    when the run directory's path is too long for a Unix socket."""
    folder = Path(run_dir).resolve() / SOCKET_DIR
    if len(str(folder).encode()) + SOCKET_NAME_MAX + len("/.sock") > IPC_PATH_MAX:
        folder = Path(tempfile.gettempdir()) / f"dope-{run_id}"
        log.info("the run directory's path is too long for Unix sockets: they go to %s", folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def place_endpoints(config: DopeConfig, run_dir: Path, run_id: str | None = None) -> DopeConfig:
    """``config`` with a run id (``bus.run_id``, kept if set) and every private endpoint on an ``ipc://``
    socket of the run (:func:`socket_dir`); explicit endpoints are kept, any other port 0 gets a free port."""
    raw = msgspec.to_builtins(config)
    run_id = config.bus.run_id or run_id or new_run_id()
    raw["bus"]["run_id"] = run_id
    folder = socket_dir(run_dir, run_id)

    def place(endpoint: str, default: str, name: str) -> str:
        return f"ipc://{folder / name[:SOCKET_NAME_MAX]}.sock" if _is_private(endpoint, default) else endpoint

    bus, services = BusConfig(), ServicesConfig()
    raw["bus"]["publish"] = place(config.bus.publish, bus.publish, "collector")
    if config.bus.snapshot:
        raw["bus"]["snapshot"] = place(config.bus.snapshot, bus.snapshot, "collector-snapshot")
    for key in SERVICE_NAMES:
        if raw["services"][key]:
            raw["services"][key] = place(raw["services"][key], getattr(services, key), key)
    for index, deploy in enumerate(raw["models"]["deploy"]):
        deploy["endpoint"] = place(deploy["endpoint"], "", model_service_name(config, index))
    return resolve_ports(with_overrides(DopeConfig(), raw, origin="supervisor"))


def default_deployments(config: DopeConfig, roles: dict[str, str]) -> DopeConfig:
    """With no ``[[models.deploy]]``: one model service per model holding a role, by id, on a loopback port 0
    (which :func:`place_endpoints` puts on the run's ``ipc://`` sockets)."""
    if config.models.deploy:
        return config
    ranked = sorted(((DEPLOYED_ROLES.index(r), mid) for mid, r in roles.items() if r in DEPLOYED_ROLES))
    deploys = [ModelDeployConfig(model=mid, endpoint="tcp://127.0.0.1:0", name=f"model-{mid.split('-')[0]}-{i}")
               for i, (_, mid) in enumerate(ranked)]
    return with_overrides(config, {"models": {"deploy": [msgspec.to_builtins(d) for d in deploys]}},
                          origin="supervisor (default deployments)")


def write_config(config: DopeConfig, run_dir: Path) -> Path:
    """The effective configuration as ``<run dir>/config.json`` (what every service reads)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    _write_json(path, msgspec.to_builtins(config))
    return path


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


class StopSignal(Protocol):
    """Anything that says whether to stop: a ``threading.Event``, or ``dope up``'s signal-safe flag."""

    def is_set(self) -> bool: ...


# ---- processes -----------------------------------------------------------------------------------

@dataclass
class ManagedProcess:
    """One service's process and its restart bookkeeping."""

    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    state: str = "pending"  # pending, starting, running, backoff, done, failed, stopped
    starts: int = 0
    failures: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    restart_at: float = 0.0

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


def backoff_ms(failures: int, min_ms: int, max_ms: int) -> int:
    """Delay before the restart after ``failures`` consecutive crashes: min, 2 min, 4 min ... capped."""
    return int(min(max_ms, min_ms * 2 ** max(0, failures - 1)))


@dataclass
class Beat:
    """The last heartbeat of a service, and what is needed for its throughput."""

    received: float
    counters: dict[str, int]
    rate: float = 0.0
    history: list[tuple[float, int]] = field(default_factory=list)


class Supervisor:
    """Runs the plan; ``run(stop)`` returns when ``stop`` is set (or, with ``exit_when_done``, when a replay drained)."""

    def __init__(self, config: DopeConfig, run_dir: Path, *, exit_when_done: bool = False,
                 python: str = sys.executable, env: dict[str, str] | None = None,
                 specs: Sequence[ServiceSpec] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.exit_when_done = exit_when_done
        self.python = python
        named = (*config.loop.kinds, *config.supervisor.bootstrap)  # trusted there: their artifacts may load
        self.env = {**os.environ, **SERVICE_ENV, **allow_env(named), **(env or {})}
        self.config_path = write_config(config, self.run_dir)
        self.processes = [ManagedProcess(spec) for spec in (plan_services(config) if specs is None else specs)]
        self.beats: dict[str, Beat] = {}
        self.lock = threading.Lock()
        self.metrics: MetricsServer | None = None
        self._monitor = ZmqSubscriber(sorted({p.spec.endpoint for p in self.processes}) or [config.bus.publish],
                                      ["heartbeat."], receive_hwm=config.bus.receive_hwm,
                                      curve=client_curve(config.bus), run_id=config.bus.run_id)
        self._last_status = 0.0
        self._quiet_since: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def run(self, stop: StopSignal) -> int:
        """Start everything, supervise until ``stop`` (or drained), stop everything; 0 if no service failed."""
        self._start_metrics()
        try:
            if self._start_all(stop):
                while not stop.is_set() and not self._drained():
                    self.tick()
        finally:
            self.stop_all()
            self.write_status()
            self._close()
        return 1 if any(p.state == "failed" for p in self.processes) else 0

    def _start_all(self, stop: StopSignal) -> bool:
        """Start the services, then the sources once every other one is ready; False if one failed at start."""
        others = [p for p in self.processes if not p.spec.is_source]
        for process in others:
            self.start(process)
        deadline = time.monotonic() + self.config.supervisor.start_timeout_ms / 1000
        while not stop.is_set() and not all(self._ready(p) for p in others):
            if time.monotonic() > deadline or any(p.state == "failed" for p in others):
                log.error("services not ready in time: %s", [p.spec.name for p in others if not self._ready(p)])
                return False
            self.tick()
        for process in self.processes:
            if process.spec.is_source:
                self.start(process)
        return not stop.is_set()

    def _ready(self, process: ManagedProcess) -> bool:
        return process.state in ("running", "done", "failed")

    def start(self, process: ManagedProcess) -> None:
        """Start (or restart) one service's process; its log goes to ``<run dir>/logs/<name>.log``."""
        spec = process.spec
        args = [self.python, "-m", spec.module, "--config", str(self.config_path), "--name", spec.name,
                *self.start_args(process)]
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{spec.name}.log", "ab") as out:
            process.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        process.starts += 1
        process.state = "starting"
        process.started_at = time.monotonic()
        log.info("started %s (pid %d)%s", spec.name, process.proc.pid,
                 f", restart #{process.restarts}" if process.restarts else "")

    def start_args(self, process: ManagedProcess) -> list[str]:
        """The service's own arguments for its next start. A restarted source waits only for the bar readers
        running now (and the supervisor): a reader that is itself restarting catches up by itself, and a
        start never waits on a peer's restart."""
        spec = process.spec
        if process.starts == 0:
            return [*spec.args, *spec.first_args]
        args = list(spec.args)
        if spec.is_source and "--wait-subscribers" in args:
            running = sum(1 for p in self.processes if p.state == "running" and p.spec.reads_bars)
            args[args.index("--wait-subscribers") + 1] = str(running + 1)
        return args

    def tick(self, wait_ms: int = 50) -> None:
        """One round: take in heartbeats, reap and restart processes, refresh status."""
        self._receive(wait_ms)
        now = time.monotonic()
        for process in self.processes:
            self._check(process, now)
        if now - self._last_status >= min(1.0, self.config.bus.heartbeat_ms / 1000):
            self.write_status()
            self._last_status = now

    def _check(self, process: ManagedProcess, now: float) -> None:
        if process.state == "backoff" and now >= process.restart_at:
            self.start(process)
            return
        if process.proc is None or process.state not in ("starting", "running"):
            return
        code = process.proc.poll()
        if code is None:
            beat = self.beats.get(process.spec.name)
            if (process.state == "starting" and beat is not None and beat.received > process.started_at
                    and not beat.counters.get("starting", 0)):  # heartbeats come during set-up too
                process.state = "running"
            return
        self._exited(process, code, now)

    def _exited(self, process: ManagedProcess, code: int, now: float) -> None:
        process.last_exit = code
        name = process.spec.name
        if code == 0:
            process.state = "done"
            log.info("%s finished", name)
            return
        if code == 2:
            process.state = "failed"
            log.error("%s failed with a configuration error (exit 2), not restarted: see %s", name,
                      self.run_dir / "logs" / f"{name}.log")
            return
        settings = self.config.supervisor
        ran_ms = (now - process.started_at) * 1000
        healthy_before = process.state == "running"  # a kill after a healthy run is no crash loop
        process.failures = 1 if ran_ms > settings.restart_max_ms or healthy_before else process.failures + 1
        delay = backoff_ms(process.failures, settings.restart_min_ms, settings.restart_max_ms)
        process.state, process.restart_at = "backoff", now + delay / 1000
        log.warning("%s exited with status %d; restarting in %d ms", name, code, delay)

    def stop_all(self) -> None:
        """SIGTERM every running service (sources first), then SIGKILL those still alive after the timeout."""
        running = [p for p in reversed(self.processes) if p.proc is not None and p.proc.poll() is None]
        for process in running:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + self.config.supervisor.stop_timeout_ms / 1000
        for process in running:
            assert process.proc is not None
            try:
                process.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time: SIGKILL", process.spec.name)
                _signal(process, signal.SIGKILL)
                process.proc.wait()
            process.last_exit = process.proc.returncode
            if process.state not in ("done", "failed"):
                process.state = "stopped"
        for process in self.processes:
            if process.state in ("backoff", "pending"):
                process.state = "stopped"

    def _close(self) -> None:
        self._monitor.close()
        if self.metrics is not None:
            self.metrics.close()

    # -- heartbeats, drain detection ------------------------------------------------------------
    def _receive(self, wait_ms: int) -> None:
        msg = self._monitor.receive(wait_ms)
        while msg is not None:
            counters = dict(getattr(msg, "counters", {}))
            self._record(msg.source, counters)
            msg = self._monitor.receive(0)

    def _record(self, service: str, counters: dict[str, int]) -> None:
        now = time.monotonic()
        work = counters.get("handled", counters.get("bus.sent", 0))
        with self.lock:
            beat = self.beats.get(service) or Beat(now, counters)
            beat.history = [*beat.history, (now, work)][-6:]
            (t0, w0), (t1, w1) = beat.history[0], beat.history[-1]
            beat.rate = (w1 - w0) / (t1 - t0) if t1 > t0 else 0.0
            beat.received, beat.counters = now, counters
            self.beats[service] = beat

    def _drained(self) -> bool:
        """With ``exit_when_done``: the sources finished and no service's work moved for two heartbeats."""
        if not self.exit_when_done or not all(p.state in ("done", "failed") for p in self.processes
                                              if p.spec.is_source):
            return False
        if any(p.state == "backoff" for p in self.processes):
            self._quiet_since = None
            return False
        running = {p.spec.name for p in self.processes if p.state in ("starting", "running")}
        moving = any(len(b.history) > 1 and b.history[-1][1] != b.history[-2][1]
                     for name, b in self.beats.items() if name in running)
        now = time.monotonic()
        if moving or self._quiet_since is None:
            self._quiet_since = now
        return now - self._quiet_since > max(2.0, 5 * self.config.bus.heartbeat_ms / 1000)

    # -- status and metrics ---------------------------------------------------------------------
    def service_metrics(self) -> list[ServiceMetrics]:
        """Health of every planned service (for the metrics endpoint and ``status.json``)."""
        now = time.monotonic()
        timeout = self.config.supervisor.heartbeat_timeout_ms / 1000
        with self.lock:
            beats = dict(self.beats)
        head = max((b.counters.get("last_event_ms", 0) for b in beats.values()), default=0)
        found = []
        for process in self.processes:
            beat = beats.get(process.spec.name)
            age = float("nan") if beat is None else now - beat.received
            alive = process.proc is not None and process.proc.poll() is None
            last_event = 0 if beat is None else beat.counters.get("last_event_ms", 0)
            found.append(ServiceMetrics(
                process.spec.name, alive and age <= timeout, age, process.restarts,
                0.0 if beat is None else beat.rate, {} if beat is None else dict(beat.counters),
                (head - last_event) / 1000 if last_event else 0.0))
        return found

    def status(self) -> dict[str, Any]:
        """Everything ``dope status`` shows, as plain data."""
        metrics = {m.service: m for m in self.service_metrics()}
        services = {}
        for process in self.processes:
            m = metrics[process.spec.name]
            services[process.spec.name] = {
                "module": process.spec.module, "pid": process.pid, "state": process.state,
                "restarts": process.restarts, "last_exit": process.last_exit, "up": m.up,
                "heartbeat_age_s": None if m.heartbeat_age_s != m.heartbeat_age_s else round(m.heartbeat_age_s, 3),
                "lag_s": m.lag_s, "throughput": round(m.throughput, 2), "counters": m.counters,
                "endpoint": process.spec.endpoint}
        return {"supervisor_pid": os.getpid(), "run_id": self.config.bus.run_id,
                "updated_ms": time.time_ns() // 1_000_000,
                "metrics": None if self.metrics is None else self.metrics.url, "services": services}

    def write_status(self) -> None:
        """Write ``<run dir>/status.json`` (atomically)."""
        _write_json(self.run_dir / STATUS_FILE, self.status())

    def _start_metrics(self) -> None:
        address = self.config.supervisor.metrics
        if not address:
            return
        host, port = parse_address(address)
        try:
            self.metrics = MetricsServer(self.service_metrics, host, port)
        except OSError as exc:  # another run holds the port: metrics elsewhere, never a failed start
            log.warning("metrics cannot listen on %s (%s): using any free port instead", address, exc)
            self.metrics = MetricsServer(self.service_metrics, host, 0)
        log.info("metrics on %s", self.metrics.url)


def _signal(process: ManagedProcess, sig: signal.Signals) -> None:
    if process.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            process.proc.send_signal(sig)


# ---- the default models --------------------------------------------------------------------------

DEFAULT_ROLES: Final = {"random_forest": "champion", "lstm": "challenger", "ridge": "shadow", "zero": "canary"}
BOOTSTRAP_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "random_forest": {"n_estimators": 30, "max_depth": 8, "n_jobs": 1},
    "lstm": {"lookback": 8, "units": 8, "epochs": 1, "threads": 1},
}


def bootstrap_registry(config: DopeConfig, kinds: Sequence[str] | None = None, *,
                       duration_ms: int | None = None) -> dict[str, str]:
    """Train ``kinds`` (``[supervisor] bootstrap``) on synthetic bars when the registry is empty; return roles.

    The bars (the first symbol, at the bar interval, seed ``synthetic.seed``) go to
    ``<registry>/bootstrap-store``; each model is trained with a short walk-forward and given its
    default role (random forest champion, LSTM challenger, ridge shadow, zero canary).
    """
    from dope.models.registry import Registry

    registry = Registry(config.registry.path)
    if registry.list():
        return registry.roles()
    kinds = tuple(config.supervisor.bootstrap if kinds is None else kinds)
    store = _bootstrap_store(config, duration_ms)
    for kind in kinds:
        model_id = _train_one(config, store, registry, kind)
        registry.promote(model_id, DEFAULT_ROLES.get(kind, "shadow"))
    return registry.roles()


def _bootstrap_store(config: DopeConfig, duration_ms: int | None) -> Any:
    from dope.market.synthetic import configured_bars
    from dope.store import BarStore
    from dope.timeparse import parse_duration, parse_time

    store = BarStore(Path(config.registry.path) / "bootstrap-store")
    start = parse_time(config.synthetic.start)
    span = duration_ms or parse_duration(config.supervisor.bootstrap_duration)
    symbol = config.collector.symbols[0]
    frames = configured_bars(config.synthetic, [symbol], start, start + span, config.bars.interval_ms)
    store.write_bars(frames[symbol], config.bars.interval_ms)
    return store


def _train_one(config: DopeConfig, store: Any, registry: Any, kind: str) -> str:
    from dope.training.pipeline import TrainRequest, train

    request = TrainRequest(kind, config.collector.symbols[0], config.bars.interval_ms,
                           params=BOOTSTRAP_PARAMS.get(kind, {}), folds=2,
                           context_symbols=tuple(config.featurizer.context_symbols))
    began = time.perf_counter()
    outcome = train(store, registry, request)
    log.info("bootstrap: trained %s in %.1f s", outcome.model_id, time.perf_counter() - began)
    return outcome.model_id
