"""The in-memory twin of the ZeroMQ bus, for unit tests: same interface, same bookkeeping, no sockets.

Frames travel as bytes (messages are encoded and decoded, exactly as on the
wire), each subscriber has a bounded queue (``hwm``; 0 = unbounded) and, as
with ``XPUB_NODROP``, a message goes to all matching subscribers or, if one of
their queues is full, to none: the publisher counts the drop and subscribers
see the gap. Publishers keep their recent bars for ``catch_up``. Thread-safe.

>>> bus = InMemoryBus()
>>> sub = bus.subscriber(["heartbeat."])
>>> pub = bus.publisher("doc")
>>> pub.heartbeat({"bars": 3})
>>> sub.receive(timeout_ms=0).counters["bars"]
3
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from dope.clock import Clock
from dope.transport.base import (
    DEFAULT_SNAPSHOT_KINDS,
    BasePublisher,
    BaseSubscriber,
    BusError,
    Frames,
    Snapshot,
)


class InMemoryBus:
    """A bus inside one process: make publishers and subscribers on it."""

    def __init__(self, hwm: int = 1_000, snapshot_depth: int = 360,
                 snapshot_kinds: Iterable[str] = DEFAULT_SNAPSHOT_KINDS) -> None:
        self.hwm = hwm
        self.snapshot_depth = snapshot_depth
        self.snapshot_kinds = tuple(snapshot_kinds)
        self.changed = threading.Condition()
        self.subscriptions = 0
        self._subscribers: list[InMemorySubscriber] = []
        self._publishers: list[InMemoryPublisher] = []

    def publisher(self, name: str, *, clock: Clock | None = None, heartbeat_ms: int = 1_000,
                  run_id: str = "") -> InMemoryPublisher:
        """A publisher called ``name`` on this bus (its frames name the run ``run_id``)."""
        pub = InMemoryPublisher(self, name, clock=clock, heartbeat_ms=heartbeat_ms, run_id=run_id)
        with self.changed:
            self._publishers.append(pub)
        return pub

    def subscriber(self, topics: Iterable[str] = (), *, hwm: int | None = None,
                   run_id: str = "") -> InMemorySubscriber:
        """A subscriber to the topic prefixes ``topics`` with a queue of ``hwm`` messages (default: the bus's);
        with ``run_id``, messages of other runs are dropped and counted."""
        sub = InMemorySubscriber(self, self.hwm if hwm is None else hwm, run_id=run_id)
        with self.changed:
            self._subscribers.append(sub)
        for topic in topics:
            sub.subscribe(topic)
        return sub

    def deliver(self, frames: Frames) -> bool:
        """Queue ``frames`` at every subscriber whose prefixes match the topic; False (none) if one is full."""
        with self.changed:
            targets = [sub for sub in self._subscribers if sub.matches(frames[0])]
            if any(sub.full() for sub in targets):
                return False
            for sub in targets:
                sub.queue.append(frames)
            self.changed.notify_all()
        return True

    def inject(self, frames: Sequence[bytes]) -> bool:
        """Send raw frames as a foreign socket would (no stamping, no checks): for tests of bad input."""
        return self.deliver(list(frames))

    def snapshots(self, prefix: str) -> list[Snapshot]:
        """Every open publisher's recent messages of topics starting with ``prefix``."""
        with self.changed:
            publishers = list(self._publishers)
        return [pub.ring.snapshot(prefix, pub.name, pub.header) for pub in publishers]

    def remove(self, member: InMemoryPublisher | InMemorySubscriber) -> None:
        """Forget a closed publisher or subscriber."""
        with self.changed:
            if isinstance(member, InMemoryPublisher):
                self._publishers.remove(member)
            else:
                self._subscribers.remove(member)
            self.changed.notify_all()


def memory_waiter(subscribers: Sequence[InMemorySubscriber]) -> Callable[[int], bool]:
    """A wait of at most ``timeout_ms`` that ends (True) as soon as one of ``subscribers`` (all on one bus) has a
    frame waiting."""
    bus = subscribers[0].bus
    if any(sub.bus is not bus for sub in subscribers):
        raise BusError("one wait covers the subscribers of one in-memory bus only")

    def wait(timeout_ms: int) -> bool:
        with bus.changed:
            return bus.changed.wait_for(lambda: any(sub.queue for sub in subscribers), max(timeout_ms, 0) / 1000)
    return wait


class InMemoryPublisher(BasePublisher):
    """Publishes on an :class:`InMemoryBus` (make it with ``bus.publisher(name)``)."""

    def __init__(self, bus: InMemoryBus, name: str, *, clock: Clock | None = None, heartbeat_ms: int = 1_000,
                 run_id: str = "") -> None:
        super().__init__(name, snapshot_depth=bus.snapshot_depth, snapshot_kinds=bus.snapshot_kinds,
                         clock=clock, heartbeat_ms=heartbeat_ms, run_id=run_id)
        self._bus = bus

    def _send_frames(self, frames: list[bytes]) -> bool:
        return self._bus.deliver(frames)

    def _await_subscription(self, timeout_ms: int) -> None:
        with self._bus.changed:
            self._bus.changed.wait_for(lambda: self._bus.subscriptions > self._stats.subscriptions, timeout_ms / 1000)
            self._stats.subscriptions = self._bus.subscriptions

    def _close(self) -> None:
        self._bus.remove(self)


class InMemorySubscriber(BaseSubscriber):
    """Receives from an :class:`InMemoryBus` (make it with ``bus.subscriber(topics)``)."""

    def __init__(self, bus: InMemoryBus, hwm: int, *, run_id: str = "") -> None:
        self._bus = bus
        self.hwm = hwm
        self.queue: deque[Frames] = deque()
        self._matching: set[bytes] = set()
        super().__init__((), run_id=run_id)

    def matches(self, topic: bytes) -> bool:
        """Whether ``topic`` starts with one of the subscribed prefixes (call under the bus's lock)."""
        return any(topic.startswith(prefix) for prefix in self._matching)

    def full(self) -> bool:
        return 0 < self.hwm <= len(self.queue)

    @property
    def bus(self) -> InMemoryBus:
        return self._bus

    def _subscribe(self, prefix: str) -> None:
        with self._bus.changed:
            self._matching.add(prefix.encode())
            self._bus.subscriptions += 1
            self._bus.changed.notify_all()

    def _unsubscribe(self, prefix: str) -> None:
        with self._bus.changed:
            self._matching.discard(prefix.encode())

    def _recv_frames(self, timeout_ms: int) -> Frames | None:
        with self._bus.changed:
            self._bus.changed.wait_for(lambda: bool(self.queue), timeout_ms / 1000)
            return self.queue.popleft() if self.queue else None

    def _fetch_snapshots(self, prefixes: Sequence[str], timeout_ms: int) -> list[Snapshot]:
        return [snapshot for prefix in prefixes for snapshot in self._bus.snapshots(prefix)]

    def _close(self) -> None:
        self._bus.remove(self)
