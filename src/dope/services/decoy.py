"""The decoy service: archives every feature vector exactly as the models received it.

It subscribes to ``features.*`` on the featurizer's endpoint, like every model service, and
writes the vectors in batches of ``decoy.flush_every`` (and whatever is left on stop, or after
a quiet second) to :class:`dope.rendezvous.archive.FeatureArchive` under the store. Any live
decision can be replayed later from ``FeatureArchive(store).read(feature_set, symbol)``.
It publishes only heartbeats (``services.decoy``).

    python -m dope.services.decoy --config dope.toml
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dope.clock import Clock
from dope.config import DopeConfig
from dope.messages import AnyMessage, Features
from dope.rendezvous.archive import FeatureArchive
from dope.services.base import Service, endpoint_of, service_main, service_publisher, service_subscriber
from dope.transport import Publisher, Subscriber

IDLE_FLUSH_MS: Final = 1_000
MAX_PENDING_BATCHES: Final = 100
"""While the archive cannot be written, at most this many batches wait (the oldest vectors go first)."""


class DecoyService(Service):
    """Buffers feature vectors and writes them to the archive in batches."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], archive: FeatureArchive,
                 *, flush_every: int = 100, heartbeat_ms: int = 1_000, clock: Clock | None = None) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms, clock=clock)
        self.archive = archive
        self.flush_every = flush_every
        self.pending: list[Features] = []
        self.max_pending = flush_every * MAX_PENDING_BATCHES
        self._last_flush_ms = self.clock.now_ms()
        self.counters.update(archived=0, flushes=0)

    def handle(self, msg: AnyMessage) -> None:
        if not isinstance(msg, Features):
            return
        self.pending.append(msg)
        if len(self.pending) >= self.flush_every:
            self.flush()
        if len(self.pending) > self.max_pending:
            self._drop_oldest(len(self.pending) - self.max_pending)

    def _drop_oldest(self, count: int) -> None:
        """Bounded memory while the archive fails: the oldest waiting vectors are dropped, counted, logged."""
        first = self.pending[0]
        del self.pending[:count]
        self.count("dropped", count)
        self.problems.report("dropped", f"archive unwritable: dropped {count} vector(s) from {first.symbol} "
                                        f"{first.open_time} on (more than {self.max_pending} waiting)")

    def on_idle(self) -> None:
        if self.pending and self.clock.now_ms() - self._last_flush_ms >= IDLE_FLUSH_MS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered vectors now (a failed write is counted and logged; the batch is kept)."""
        self._last_flush_ms = self.clock.now_ms()
        if not self.pending:
            return
        try:
            self.archive.write(self.pending)
        except (OSError, ValueError) as exc:
            self.count("write_errors")
            self.problems.report("write_error", f"cannot archive {len(self.pending)} vector(s): {exc}")
            return
        self.count("archived", len(self.pending))
        self.count("flushes")
        self.pending = []

    def finish(self) -> None:
        self.flush()

    def extra_counters(self) -> Mapping[str, int]:
        return {"pending": len(self.pending)}


def build(config: DopeConfig, **overrides: Any) -> DecoyService:
    """The decoy of ``config``; overrides: ``name``, ``endpoint``, ``features_endpoint``, ``store``, ``clock``."""
    name = overrides.get("name") or config.decoy.service_name
    subscriber = service_subscriber(config, ["features."],
                                    [overrides.get("features_endpoint") or endpoint_of(config, "featurizer")])
    clock = overrides.get("clock")
    publisher = service_publisher(config, name, overrides.get("endpoint") or endpoint_of(config, "decoy"),
                                  clock=clock)
    archive = FeatureArchive(overrides.get("store") or config.store.path)
    return DecoyService(name, publisher, [subscriber], archive, flush_every=config.decoy.flush_every,
                        heartbeat_ms=config.bus.heartbeat_ms, clock=clock)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.decoy --config FILE [--name N]``."""
    return service_main(build, argv, prog="dope.services.decoy", default_name="decoy")


if __name__ == "__main__":
    raise SystemExit(main())
