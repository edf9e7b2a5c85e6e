"""The decoy service: archives every feature vector exactly as the models received it, and what was decided.

It subscribes to ``features.*`` on the featurizer's endpoint, like every model service, and to
``score.*`` (every model service), ``prediction.*`` (the rendezvous), ``decision.*`` and ``fill.*``
(the trader), and writes them in batches of ``decoy.flush_every`` feature vectors (with the messages
that came with them; a smaller batch after a quiet second or when its first message has waited 10 s,
and whatever is left on stop) under the store: vectors to
:class:`dope.rendezvous.archive.FeatureArchive`, the rest to :class:`dope.rendezvous.records.MessageArchive`.
Any live decision can be replayed later from them (``dope lineage``). Off the critical path: nothing
waits for the decoy.

It also runs the model-health monitor (:class:`dope.loop.health.HealthMonitor`): it hears the
collector's ``bar.*``/``late_trades.*`` too, and publishes ``health.<symbol>``
(:class:`~dope.messages.ModelHealth`) beside its heartbeats (``services.decoy``), whose ``health.*``
counters summarise it (``docs/loop.md``, "Monitors").

    python -m dope.services.decoy --config dope.toml
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dope.clock import Clock, LiveClock
from dope.config import DopeConfig
from dope.logs import ProblemCounter
from dope.loop.health import ChampionWatch, HealthLevels, HealthMonitor
from dope.messages import AnyMessage, Bar, Features, LateTrades, ModelHealth, Prediction
from dope.models.registry import Registry
from dope.rendezvous.records import ARCHIVED, LiveArchive
from dope.services.base import (
    Service,
    endpoint_of,
    model_endpoints,
    service_main,
    service_publisher,
    service_subscriber,
)
from dope.transport import Publisher, Subscriber

IDLE_FLUSH_MS: Final = 1_000
"""A batch smaller than ``flush_every`` is written once nothing has come for this long (the bus is quiet)..."""
MAX_FLUSH_DELAY_MS: Final = 10_000
"""...or once its first message has waited this long, while messages keep coming."""
HEARD_TOPICS: Final = ("bar.", "late_trades.", "score.", "prediction.", "decision.", "fill.")
"""Besides ``features.``: what the monitor reads and what the archive keeps."""
SETTLE_MS: Final = 30
"""The decoy hears every hop of a bar (bar, vector, scores, prediction, decision, fill): it handles them in one
burst this long after the first, once the decision is out, instead of waking beside each process on its path."""
MAX_PENDING_BATCHES: Final = 100
"""While the archive cannot be written, at most this many batches wait (the oldest vectors go first)."""


class DecoyService(Service):
    """Buffers feature vectors, scores, predictions, decisions and fills; writes them to the archive in batches;
    monitors the champion's health."""

    settle_ms = SETTLE_MS

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], archive: LiveArchive,
                 *, flush_every: int = 100, heartbeat_ms: int = 1_000, clock: Clock | None = None,
                 monitor: HealthMonitor | None = None) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms, clock=clock)
        self.archive = archive
        self.monitor = monitor
        self.flush_every = flush_every
        self.pending: list[AnyMessage] = []
        self.pending_vectors = 0  # the batch size counts vectors: a bar's scores etc. ride along, no more writes
        self.max_pending = flush_every * MAX_PENDING_BATCHES  # vectors waiting while the archive fails
        self._last_heard_ms = self._first_pending_ms = self._last_try_ms = self.clock.now_ms()
        self.counters.update(archived=0, flushes=0)

    def handle(self, msg: AnyMessage) -> None:
        if isinstance(msg, ARCHIVED):
            self._last_heard_ms = self.clock.now_ms()
            if not self.pending:
                self._first_pending_ms = self._last_heard_ms
            self.pending.append(msg)
            self.pending_vectors += isinstance(msg, Features)
            if self.pending_vectors >= self.flush_every:
                self.flush()
            if self.pending_vectors > self.max_pending:
                self._drop_oldest()
        if self.monitor is not None:
            self.publish_health(self._monitor(self.monitor, msg))

    def _drop_oldest(self) -> None:
        """Bounded memory while the archive fails: the oldest waiting vectors (with the messages that came
        with them) are dropped, counted, logged."""
        first, excess, cut = self.pending[0], self.pending_vectors - self.max_pending, 0
        while excess > 0:
            excess -= isinstance(self.pending[cut], Features)
            cut += 1
        while cut < len(self.pending) and not isinstance(self.pending[cut], Features):
            cut += 1  # what came after the last dropped vector goes with it
        del self.pending[:cut]
        self.pending_vectors = self.max_pending
        self.count("dropped", cut)
        self.problems.report("dropped", f"archive unwritable: dropped {cut} message(s) from {first.symbol} "
                                        f"{first.event_time} on (more than {self.max_pending} vectors waiting)")

    @staticmethod
    def _monitor(monitor: HealthMonitor, msg: AnyMessage) -> list[ModelHealth]:
        if isinstance(msg, Features):
            return monitor.on_features(msg)
        if isinstance(msg, Bar):
            return monitor.on_bar(msg)
        if isinstance(msg, LateTrades):
            monitor.on_late_trades(msg)
        elif isinstance(msg, Prediction):
            monitor.on_prediction(msg)
        return []

    def publish_health(self, reports: list[ModelHealth]) -> None:
        for report in reports:
            self.publish(report)
            self.count("health_reports")

    def on_idle(self) -> None:
        if self._partial_batch_due(self.clock.now_ms()):
            self.flush()
        if self.monitor is not None:
            self.publish_health(self.monitor.tick())

    def _partial_batch_due(self, now: int) -> bool:
        """Whether to write a batch smaller than ``flush_every``: once the bus has been quiet for a second (not
        in the middle of a bar's burst of messages, the path of a decision), or its first message has waited
        ten; at most one try a second (a failing archive is not hammered)."""
        return (bool(self.pending) and now - self._last_try_ms >= IDLE_FLUSH_MS
                and (now - self._last_heard_ms >= IDLE_FLUSH_MS or now - self._first_pending_ms >= MAX_FLUSH_DELAY_MS))

    def flush(self) -> None:
        """Write the buffered messages now (a failed write is counted and logged; the batch is kept)."""
        self._last_try_ms = self.clock.now_ms()
        if not self.pending:
            return
        try:
            self.archive.write(self.pending)
        except (OSError, ValueError) as exc:
            self.count("write_errors")
            self.problems.report("write_error", f"cannot archive {len(self.pending)} message(s): {exc}")
            return
        self.count("archived", len(self.pending))
        self.count("flushes")
        self.pending, self.pending_vectors = [], 0

    def finish(self) -> None:
        self.flush()

    def extra_counters(self) -> Mapping[str, int]:
        health = self.monitor.counters() if self.monitor is not None else {}
        return {"pending": len(self.pending), **health}


def build(config: DopeConfig, **overrides: Any) -> DecoyService:
    """The decoy of ``config``; overrides: ``name``, ``endpoint``, ``features_endpoint``, ``store``, ``clock``."""
    name = overrides.get("name") or config.decoy.service_name
    features = service_subscriber(config, ["features."],
                                  [overrides.get("features_endpoint") or endpoint_of(config, "featurizer")])
    heard = service_subscriber(config, HEARD_TOPICS, [endpoint_of(config, "collector"), *model_endpoints(config),
                                                      endpoint_of(config, "rendezvous"), endpoint_of(config, "trader")])
    clock = overrides.get("clock")
    publisher = service_publisher(config, name, overrides.get("endpoint") or endpoint_of(config, "decoy"),
                                  clock=clock)
    archive = LiveArchive(overrides.get("store") or config.store.path)
    decoy = DecoyService(name, publisher, [features, heard], archive, flush_every=config.decoy.flush_every,
                         heartbeat_ms=config.bus.heartbeat_ms, clock=clock)
    decoy.monitor = health_monitor(config, decoy.problems, clock)
    return decoy


def health_monitor(config: DopeConfig, problems: ProblemCounter, clock: Clock | None = None) -> HealthMonitor:
    """The monitor of ``config``'s champion: stale by the wall clock for a live (Binance) source, else
    by event time."""
    registry = Registry(config.registry.path)
    live = config.collector.source == "binance"
    return HealthMonitor(HealthLevels.of(config.loop), ChampionWatch(registry.root / "roles.json",
                                                                     registry.champion).current,
                         registry.reference, problems, clock=(clock or LiveClock()) if live else None,
                         source=config.decoy.service_name)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.decoy --config FILE [--name N]``."""
    return service_main(build, argv, prog="dope.services.decoy", default_name="decoy")


if __name__ == "__main__":
    raise SystemExit(main())
