"""The common part of every DOPE service: publisher, heartbeats, receive loop, signals, logging, ``main``.

A service is a :class:`Service` subclass that says what to do with one message
(``handle``) and, optionally, when nothing arrives (``on_idle``). The base owns
the rest: one publisher on the service's own endpoint, subscribers with a
receive timeout, a heartbeat every ``bus.heartbeat_ms`` carrying the service's
counters, and bad input counted and logged instead of raised::

    class Echo(Service):
        def handle(self, msg: AnyMessage) -> None:
            self.publish(msg)

    def build(config: DopeConfig, **overrides: Any) -> Echo:
        name = overrides.get("name") or "echo"
        return Echo(name, service_publisher(config, name, "tcp://127.0.0.1:5600"),
                    [service_subscriber(config, ["bar."], [endpoint_of(config, "collector")])],
                    heartbeat_ms=config.bus.heartbeat_ms)

    def main(argv: list[str] | None = None) -> int:
        return service_main(build, argv, prog="dope.services.echo")

See ``docs/services.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from dope.clock import Clock, LiveClock
from dope.config import ConfigError, DopeConfig, config_from_dict, load_config
from dope.errors import UserError
from dope.logs import ProblemCounter
from dope.memtrace import start_from_env as start_memory_trace
from dope.messages import AnyMessage
from dope.transport import (
    Publisher,
    Subscriber,
    Waiter,
    ZmqPublisher,
    ZmqSubscriber,
    any_waiter,
    client_curve,
    server_curve,
)

SERVICE_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(service)s[%(symbol)s] %(name)s: %(message)s"
SERVICE_NAMES: Final = ("collector", "featurizer", "decoy", "rendezvous", "trader", "dashboard", "trainer")
_DRAIN_BATCH: Final = 256
PR_SET_PDEATHSIG: Final = 1  # prctl option (linux/prctl.h)

Handler = Callable[[AnyMessage], None]


# ---- logging ------------------------------------------------------------------------------------

class ServiceLogFilter(logging.Filter):
    """Puts ``service`` (and ``symbol``, ``-`` when the record names none) on every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not hasattr(record, "symbol"):
            record.symbol = "-"
        return True


def setup_service_logging(service: str, level: str = "INFO") -> None:
    """One line per record on stderr, each naming the service and the symbol (``extra={"symbol": s}``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(SERVICE_LOG_FORMAT))
    handler.addFilter(ServiceLogFilter(service))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def symbol_logger(logger: logging.Logger, symbol: str) -> logging.LoggerAdapter[logging.Logger]:
    """``logger`` whose records carry ``symbol`` (shown by the service log format)."""
    return logging.LoggerAdapter(logger, {"symbol": symbol})


# ---- endpoints ----------------------------------------------------------------------------------

def endpoint_of(config: DopeConfig, service: str) -> str:
    """The endpoint ``service`` publishes on (``[services]``; the collector's ``""`` means ``bus.publish``)."""
    if service not in SERVICE_NAMES:
        raise ConfigError(f"no endpoint for service {service!r}: known services are {', '.join(SERVICE_NAMES)}")
    endpoint: str = getattr(config.services, service)
    if service == "collector" and not endpoint:
        return config.bus.publish
    return endpoint


def model_endpoints(config: DopeConfig) -> list[str]:
    """The endpoints of every deployed model service (``[[models.deploy]]``), in order."""
    return [deploy.endpoint for deploy in config.models.deploy]


def model_service_name(config: DopeConfig, index: int) -> str:
    """The name of the ``index``-th model service: its ``name``, else ``model-<index>``."""
    deploy = config.models.deploy[index]
    return deploy.name or f"model-{index}"


def service_publisher(config: DopeConfig, name: str, endpoint: str, *, snapshot_endpoint: str | None = None,
                      clock: Clock | None = None) -> ZmqPublisher:
    """A publisher named ``name`` bound to ``endpoint``, with the bus' HWM, linger, heartbeat and CURVE."""
    bus = config.bus
    return ZmqPublisher(endpoint, name, send_hwm=bus.send_hwm, snapshot_endpoint=snapshot_endpoint,
                        snapshot_depth=bus.snapshot_bars, clock=clock, heartbeat_ms=bus.heartbeat_ms,
                        linger_ms=bus.linger_ms, curve=server_curve(bus),
                        allow_plaintext_remote=bus.allow_plaintext_remote, run_id=bus.run_id)


def service_subscriber(config: DopeConfig, topics: Iterable[str], endpoints: Sequence[str], *,
                       snapshot_endpoints: Sequence[str] = ()) -> ZmqSubscriber:
    """A subscriber to ``topics`` connected to every one of ``endpoints`` (one socket, many publishers)."""
    return ZmqSubscriber(list(endpoints), topics, receive_hwm=config.bus.receive_hwm,
                         snapshot_endpoint=list(snapshot_endpoints) or None, curve=client_curve(config.bus),
                         run_id=config.bus.run_id)


def wait_for_subscribers(publisher: Publisher, minimum: int, *, settle_ms: int = 300,
                         timeout_ms: int = 10_000, on_tick: Callable[[], None] | None = None) -> int:
    """Wait until ``minimum`` subscriptions reached ``publisher`` and none arrived for ``settle_ms``.

    A source calls this before it publishes anything, so that no subscriber misses the start of
    a replay (ZeroMQ's slow joiner). ``on_tick`` runs every 50 ms or so, on this thread (the
    collector heartbeats from it while it waits). Returns the subscriptions seen (fewer on timeout, logged).
    """
    deadline = time.monotonic() + timeout_ms / 1000
    seen, quiet_since = publisher.stats.subscriptions, time.monotonic()
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        publisher.wait_for_subscriptions(seen + 1, timeout_ms=min(settle_ms, 50))
        if publisher.stats.subscriptions != seen:
            seen, quiet_since = publisher.stats.subscriptions, time.monotonic()
        elif seen >= minimum and time.monotonic() - quiet_since >= settle_ms / 1000:
            return seen
    logging.getLogger("dope.services").warning("%s: %d subscription(s) after %d ms, expected %d",
                                                publisher.name, seen, timeout_ms, minimum)
    return seen


# ---- the service ------------------------------------------------------------------------------

class Service:
    """A process's main object: one publisher, subscribers, counters, heartbeats and a receive loop.

    Subclasses override :meth:`handle` (one received message), and optionally :meth:`setup`
    (before the loop, e.g. a snapshot catch-up with :meth:`fetch_snapshots`), :meth:`on_idle` (after
    every quiet receive, e.g. deadlines), :meth:`extra_counters` and :meth:`finish`. An exception
    from ``handle`` is counted (``errors``) and logged; the service goes on. Heartbeats start
    before ``setup`` (counter ``starting`` = 1 until it is done), so a service that catches up,
    or waits for a peer that is itself restarting, is seen alive all along.
    """

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber] = (), *,
                 heartbeat_ms: int = 1_000, receive_timeout_ms: int = 20, clock: Clock | None = None) -> None:
        self.name = name
        self.publisher = publisher
        self.subscribers = list(subscribers)
        self.heartbeat_ms = heartbeat_ms
        self.receive_timeout_ms = receive_timeout_ms
        self.clock: Clock = clock or LiveClock()
        self.log = logging.getLogger(f"dope.services.{name}")
        self.problems = ProblemCounter(self.log)
        self.counters: dict[str, int] = {"handled": 0, "errors": 0}
        self.last_event_ms = 0
        self.started = False
        self.counters["starting"] = 1

    settle_ms: int = 0
    """Off the path of a decision (the decoy; live, a model the prediction does not wait for): when a message
    arrives after a quiet spell, wait this long, then handle the whole burst at once, so the service's work never
    competes for the CPU with the processes that carry a bar to its decision (0: handle every message at once).
    Read before every wait: a service may change it while it runs."""

    # -- hooks -------------------------------------------------------------------------------
    def handle(self, msg: AnyMessage) -> None:
        """Act on one valid message (override)."""

    def on_idle(self) -> None:
        """Called after each receive that timed out (override for deadlines and timers)."""

    def wait_ms(self) -> int:
        """How long the next receive may wait (override to sleep until a deadline); ``receive_timeout_ms``."""
        return self.receive_timeout_ms

    async def setup(self) -> None:
        """Called once before the loop (override: catch up, load models)."""

    def finish(self) -> None:
        """Called once after the loop ended (override: flush)."""

    def extra_counters(self) -> Mapping[str, int]:
        """Service-specific counters for the heartbeat (override)."""
        return {}

    # -- machinery ---------------------------------------------------------------------------
    def publish(self, msg: AnyMessage) -> bool:
        """Publish on this service's endpoint (False: dropped, counted by the bus)."""
        return self.publisher.publish(msg)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + n

    def reject(self, kind: str, message: str, symbol: str = "-") -> None:
        """Count (``rejected.<kind>``) and log a refused input; the service goes on."""
        self.count(f"rejected.{kind}")
        self.problems.report(kind, f"[{symbol}] {message}")

    def heartbeat_counters(self) -> dict[str, int]:
        """Everything a heartbeat carries: own counters, problems, subscriber totals, last event time."""
        merged = dict(self.counters)
        for sub in self.subscribers:
            for key, value in sub.stats.as_counters().items():
                merged[key] = merged.get(key, 0) + value
        merged.update({f"problem.{k}": v for k, v in self.problems.counts.items()})
        merged.update(self.extra_counters())
        merged["bus.subscriptions"] = self.publisher.stats.subscriptions
        merged["last_event_ms"] = self.last_event_ms
        return merged

    def send_heartbeat(self) -> None:
        """Publish a heartbeat now."""
        self.publisher.heartbeat(self.heartbeat_counters())

    def dispatch(self, msg: AnyMessage) -> None:
        """``handle`` one message, counting it; an exception is counted and logged, never raised."""
        try:
            self.handle(msg)
        except Exception as exc:  # bad input must never kill a service
            self.count("errors")
            self.problems.report("error", f"[{msg.symbol}] {type(msg).__name__} at {msg.event_time}: {exc!r}")
            return
        self.counters["handled"] += 1
        if msg.event_time > self.last_event_ms and msg.symbol != "*":
            self.last_event_ms = msg.event_time

    async def fetch_snapshots(self, timeout_ms: int) -> list[AnyMessage]:
        """The recent messages of every subscriber's publishers (their snapshots), fetched in a worker
        thread so heartbeats go on meanwhile; a dead or restarting publisher costs at most ``timeout_ms``."""
        found: list[AnyMessage] = []
        for sub in self.subscribers:  # the loop does not touch the subscribers before setup is done
            found += await asyncio.to_thread(sub.catch_up, timeout_ms)
        return found

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat from the start; set up, receive until ``stop`` is set; then finish with a last heartbeat."""
        beats = asyncio.create_task(self._heartbeats(stop))
        await asyncio.sleep(0)  # the first heartbeat leaves now, even if setup blocks
        try:
            await self.setup()
            gc.collect()
            gc.freeze()  # what the start loaded (models, libraries) is never scanned again: no long GC pause later
            self.started = True
            self.counters["starting"] = 0
            self.send_heartbeat()
            await receive_loop(self.subscribers, stop, self.dispatch, timeout_ms=self.wait_ms,
                               on_idle=self._safe_idle, settle_ms=lambda: self.settle_ms)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            self.finish()
            self.send_heartbeat()
            self.log.info("%s stopped: %s", self.name, self.heartbeat_counters())

    def close(self) -> None:
        """Close the publisher and every subscriber."""
        for sub in self.subscribers:
            sub.close()
        self.publisher.close()

    def _safe_idle(self) -> None:
        try:
            self.on_idle()
        except Exception as exc:
            self.count("errors")
            self.problems.report("error", f"idle step failed: {exc!r}")

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.send_heartbeat()
            except Exception as exc:  # e.g. counters changing in a catch-up thread: never stop beating
                self.count("errors")
                self.problems.report("heartbeat", f"heartbeat failed: {exc!r}")
            await asyncio.sleep(self.heartbeat_ms / 1000)


async def receive_loop(subscribers: Sequence[Subscriber], stop: asyncio.Event, handle: Handler, *,
                       timeout_ms: int | Callable[[], int] = 20, on_idle: Callable[[], None] | None = None,
                       settle_ms: int | Callable[[], int] = 0) -> None:
    """Deliver every message of ``subscribers`` to ``handle`` until ``stop`` is set.

    Waits at most ``timeout_ms`` per receive (a callable: asked before every wait), on all subscribers at
    once: whichever has a message first wakes the loop. ``on_idle`` runs after a receive that timed out,
    and at least every ``timeout_ms`` while messages keep coming; the loop yields to the event loop
    (heartbeats, signal handlers) as often. A message that arrives is handled at once, and nothing else
    runs before the next wait: each wake-up on the path of a bar costs only what its message needs. With
    no subscriber it only idles. With ``settle_ms``, a message that ends a wait is left queued for that
    long (the event loop runs meanwhile), then it and everything that came after it are handled together
    (a callable: asked before every wait).
    """
    def wait_ms() -> int:
        return timeout_ms() if callable(timeout_ms) else timeout_ms

    def settle() -> int:
        return settle_ms() if callable(settle_ms) else settle_ms

    wait_any = _waiter_made_on_first_use(subscribers) if subscribers else None
    due = time.monotonic() + wait_ms() / 1000
    while not stop.is_set():
        got = sum(_drain(sub, handle) for sub in subscribers)
        wait = wait_ms()
        if not got:
            got = await _wait_and_handle(subscribers, handle, wait, wait_any, settle())
        now = time.monotonic()
        if got and now < due:
            continue
        due = now + wait / 1000
        if on_idle is not None:
            on_idle()
        await asyncio.sleep(0)


def _drain(sub: Subscriber, handle: Handler) -> int:
    for n in range(_DRAIN_BATCH):
        msg = sub.receive(0)
        if msg is None:
            return n
        handle(msg)
    return _DRAIN_BATCH


def _waiter_made_on_first_use(subscribers: Sequence[Subscriber]) -> Waiter:
    """:func:`any_waiter` of ``subscribers``, made at the first wait that needs it (several subscribers, or
    settling), so a lone subscriber read directly never needs one."""
    made: list[Waiter] = []

    def wait(timeout_ms: int) -> bool:
        if not made:
            made.append(any_waiter(subscribers))
        return made[0](timeout_ms)
    return wait


async def _wait_and_handle(subscribers: Sequence[Subscriber], handle: Handler, timeout_ms: int,
                           wait_any: Waiter | None, settle_ms: int) -> int:
    """Wait at most ``timeout_ms`` for a message and handle what came (``settle_ms`` later: the burst); how
    many. A lone subscriber without settling is waited on directly (most services: nothing extra per bar)."""
    if wait_any is None:
        time.sleep(timeout_ms / 1000)
        return 0
    if len(subscribers) == 1 and settle_ms <= 0:
        msg = subscribers[0].receive(timeout_ms)
        if msg is None:
            return 0
        handle(msg)
        return 1
    if not wait_any(timeout_ms):
        return 0
    if settle_ms > 0:
        await asyncio.sleep(settle_ms / 1000)  # the event loop (heartbeats) runs while the burst settles
    return sum(_drain(sub, handle) for sub in subscribers)


# ---- running a service as a process ----------------------------------------------------------

async def run_until_signalled(service: Any, stop: asyncio.Event | None = None) -> None:
    """Run ``service.run(stop)`` until it ends or SIGTERM/SIGINT sets ``stop``; then close it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        service.close()


def load_service_config(path: str | None) -> DopeConfig:
    """The configuration in ``path``: TOML (``load_config``, env overrides) or the JSON the supervisor writes."""
    if path is not None and path.endswith(".json"):
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc}") from None
        return config_from_dict(raw, path)
    return load_config(path)


def service_parser(prog: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
                   ) -> argparse.ArgumentParser:
    """``--config FILE --name N --log-level L`` plus the service's own options."""
    parser = argparse.ArgumentParser(prog=prog, description=f"run the DOPE service {prog}")
    parser.add_argument("--config", help="TOML (or supervisor JSON) configuration file; default: built-in")
    parser.add_argument("--name", help="service name (in heartbeats, logs and message sources)")
    parser.add_argument("--log-level", help="override the configured log level")
    if add_arguments is not None:
        add_arguments(parser)
    return parser


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent process dies (even by SIGKILL), so no service outlives
    a killed ``dope up``; a no-op where ``prctl`` is unavailable."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def service_main(build: Callable[..., Any], argv: Sequence[str] | None, *, prog: str,
                 add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 default_name: str | None = None) -> int:
    """Parse the arguments, load the config, set up logging, ``build(config, **options)`` and run it.

    Returns 0 after a clean stop, 2 on a configuration or user error (printed, named).
    """
    args = vars(service_parser(prog, add_arguments).parse_args(argv))
    die_with_parent()
    try:
        config = load_service_config(args.pop("config"))
        level = args.pop("log_level") or config.log_level
        setup_service_logging(args.get("name") or default_name or prog.rsplit(".", 1)[-1], level)
        start_memory_trace(args.get("name") or default_name or prog.rsplit(".", 1)[-1])
        service = build(config, **{k: v for k, v in args.items() if v is not None})
        if args.get("name") is None and getattr(service, "name", None):
            setup_service_logging(service.name, level)
        asyncio.run(run_until_signalled(service))
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0

