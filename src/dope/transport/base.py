"""What every bus implementation shares: the protocols, and the sequence, gap, snapshot and heartbeat bookkeeping.

A publisher stamps each message with its name (``source``) and a sequence
number per topic (``seq``, from 1), sends ``[topic, header, body]`` frames and
keeps the last messages of some kinds in a :class:`TopicRing` for late joiners.
The header (:class:`FrameHeader`, the same bytes for every message of one
publisher) names the run the publisher belongs to and its incarnation (a random
number drawn when it starts). A subscriber checks every frame (:class:`Intake`):
frames of another run are dropped and counted (``foreign``); undecodable or
mis-labelled frames and other schema versions are counted and logged, never
raised; a new incarnation of a source starts its streams over (a restart); a
jump in ``seq`` is counted as a gap; an old ``seq`` as a duplicate; heartbeats
are remembered so a silent publisher is noticed.

The ZeroMQ and in-memory buses subclass :class:`BasePublisher` and
:class:`BaseSubscriber`, which hold all of this logic, and add only how frames
move.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Protocol, Self

import msgspec

from dope.clock import Clock, LiveClock
from dope.errors import UserError
from dope.logs import ProblemCounter
from dope.messages import AnyMessage, Heartbeat, SchemaVersionError, decode, encode, topic_of

log = logging.getLogger("dope.transport")

Frames = Sequence[bytes]
StreamKey = tuple[str, str]
"""``(source, topic)``: one publisher's stream of one topic, numbered from 1."""

HEARTBEAT_SYMBOL: Final = "*"
DEFAULT_SNAPSHOT_KINDS: Final = ("bar",)
_HEADER_CACHE: Final = 1_024


class FrameHeader(msgspec.Struct, frozen=True, array_like=True):
    """The middle frame of every message: the publisher's run id and incarnation.

    ``run`` is the id ``dope up`` gives a run (``""``: no run); ``incarnation`` is drawn at random
    when the publisher starts, so a restarted publisher is told apart from its previous life even
    when its first messages were lost (its ``seq`` starts over at 1).
    """

    run: str
    incarnation: int

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)


NO_RUN: Final = FrameHeader("", 0)
"""The header of a message outside any run (and of a snapshot that does not say)."""


def new_incarnation() -> int:
    """A random 63-bit number naming one life of a publisher."""
    return secrets.randbits(63)


class BusError(UserError, OSError):
    """The bus could not be set up (an endpoint that cannot be bound or is malformed); the message says which."""


@dataclass
class PublisherStats:
    """What a publisher sent and dropped, per topic."""

    sent: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_counters(self) -> dict[str, int]:
        """Totals, named for a heartbeat's counters."""
        return {"bus.sent": self.total_sent, "bus.dropped": self.total_dropped}


@dataclass
class SubscriberStats:
    """What a subscriber accepted, refused (by reason), missed (per stream) and skipped."""

    received: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    gaps: dict[StreamKey, int] = field(default_factory=dict)
    duplicates: int = 0
    restarts: int = 0
    snapshot_messages: int = 0
    foreign: int = 0
    """Messages of another run (another ``dope up`` on this machine), dropped."""

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def total_gaps(self) -> int:
        return sum(self.gaps.values())

    def as_counters(self) -> dict[str, int]:
        """Totals, named for a heartbeat's counters."""
        return {"bus.received": self.received, "bus.rejected": self.total_rejected,
                "bus.gaps": self.total_gaps, "bus.duplicates": self.duplicates, "bus.foreign": self.foreign,
                "bus.restarts": self.restarts}


class Publisher(Protocol):
    """Sends messages on the bus; never blocks (a full queue drops the message, counted)."""

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> PublisherStats: ...

    def publish(self, msg: AnyMessage) -> bool: ...

    def heartbeat(self, counters: Mapping[str, int] | None = None) -> None: ...

    def wait_for_subscriptions(self, count: int = 1, timeout_ms: int = 5_000) -> bool: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Subscriber(Protocol):
    """Receives messages of the subscribed topic prefixes, checked and sequence-tracked."""

    @property
    def stats(self) -> SubscriberStats: ...

    def subscribe(self, prefix: str) -> None: ...

    def unsubscribe(self, prefix: str) -> None: ...

    def receive(self, timeout_ms: int) -> AnyMessage | None: ...

    def catch_up(self, timeout_ms: int = 2_000) -> list[AnyMessage]: ...

    def last_heartbeat(self, source: str) -> int | None: ...

    def dead_publishers(self, now_ms: int, timeout_ms: int) -> list[str]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """A publisher's recent messages matching a prefix, its current seq of each such topic, its header."""

    source: str
    entries: list[tuple[str, bytes]]
    seqs: dict[str, int]
    header: FrameHeader = NO_RUN


class TopicRing:
    """The last ``depth`` messages of each topic of the kept kinds; thread-safe (served by another thread).

    >>> ring = TopicRing(depth=2)
    >>> for seq in (1, 2, 3): ring.record("bar.X", seq, b"%d" % seq)
    >>> ring.snapshot("bar", "pub").entries
    [('bar.X', b'2'), ('bar.X', b'3')]
    """

    def __init__(self, depth: int, kinds: Iterable[str] = DEFAULT_SNAPSHOT_KINDS) -> None:
        if depth < 0:
            raise ValueError(f"snapshot depth must be >= 0, got {depth}")
        self.depth = depth
        self.kinds = frozenset(kinds)
        self._rings: dict[str, deque[tuple[int, bytes]]] = {}
        self._lock = threading.Lock()

    def keeps(self, topic: str) -> bool:
        """Whether messages of this topic are kept (its kind is one of ``kinds``)."""
        return self.depth > 0 and topic.partition(".")[0] in self.kinds

    def record(self, topic: str, seq: int, body: bytes) -> None:
        """Remember one message (a no-op for topics not kept)."""
        if not self.keeps(topic):
            return
        with self._lock:
            ring = self._rings.get(topic)
            if ring is None:
                ring = self._rings[topic] = deque(maxlen=self.depth)
            ring.append((seq, body))

    def snapshot(self, prefix: str, source: str, header: FrameHeader = NO_RUN) -> Snapshot:
        """The kept messages of topics starting with ``prefix``, oldest first per topic."""
        with self._lock:
            rings = {t: list(r) for t, r in self._rings.items() if t.startswith(prefix)}
        entries = [(topic, body) for topic, ring in rings.items() for _, body in ring]
        seqs = {topic: ring[-1][0] for topic, ring in rings.items()}
        return Snapshot(source, entries, seqs, header)


class SequenceTracker:
    """Last seq seen per (source, topic); counts missing seqs (gaps), old ones (duplicates) and restarts.

    A new incarnation of a source (:meth:`incarnation`), or a seq of 1 after a higher one, means
    the publisher restarted: its streams start over.
    """

    def __init__(self, stats: SubscriberStats) -> None:
        self._last: dict[StreamKey, int] = {}
        self._incarnations: dict[str, int] = {}
        self._stats = stats

    def incarnation(self, source: str, incarnation: int) -> None:
        """Note ``source``'s incarnation; with a new one its streams start over at seq 1 (so messages of the
        new life missed before the first one received count as a gap)."""
        known = self._incarnations.get(source)
        if known == incarnation:
            return
        self._incarnations[source] = incarnation
        if known is None:
            return
        streams = [key for key in self._last if key[0] == source]
        for key in streams:
            self._last[key] = 0
        if streams:
            self._stats.restarts += 1
            log.warning("%s restarted (a new incarnation): its %d stream(s) start over", source, len(streams))

    def last(self, key: StreamKey) -> int:
        return self._last.get(key, 0)

    def observe(self, key: StreamKey, seq: int) -> bool:
        """Account for ``seq`` on stream ``key``; False if it is a duplicate to skip."""
        last = self._last.get(key)
        if last is not None and seq <= last:
            if seq != 1:
                self._stats.duplicates += 1
                return False
            self._stats.restarts += 1
            log.warning("%s restarted its stream %s (seq 1 after %d)", key[0], key[1], last)
        elif last is not None and seq > last + 1:
            self._gap(key, seq - last - 1, last)
        self._last[key] = seq
        return True

    def prime(self, key: StreamKey, seq: int) -> None:
        """Treat everything up to ``seq`` as delivered (after a snapshot)."""
        self._last[key] = max(self._last.get(key, 0), seq)

    def _gap(self, key: StreamKey, missing: int, last: int) -> None:
        self._stats.gaps[key] = self._stats.gaps.get(key, 0) + missing
        log.warning("gap on %s from %s: %d message(s) missing after seq %d", key[1], key[0], missing, last)


class HeartbeatTracker:
    """Event time of the last heartbeat of each source; which sources have gone quiet."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def observe(self, beat: Heartbeat) -> None:
        self._last[beat.source] = max(self._last.get(beat.source, beat.event_time), beat.event_time)

    def last(self, source: str) -> int | None:
        return self._last.get(source)

    def dead(self, now_ms: int, timeout_ms: int) -> list[str]:
        """Sources whose last heartbeat is older than ``timeout_ms`` at ``now_ms``, sorted."""
        return sorted(s for s, t in self._last.items() if now_ms - t > timeout_ms)


class Intake:
    """Checks received frames into messages: foreign runs, rejects (counted, logged), restarts, gaps, duplicates.

    ``run_id`` is the run this subscriber belongs to: frames of any other run are dropped and
    counted (``stats.foreign``). ``""`` accepts every run (a tool outside ``dope up``).
    """

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self.stats = SubscriberStats()
        self.sequences = SequenceTracker(self.stats)
        self.heartbeats = HeartbeatTracker()
        self._problems = ProblemCounter(log)
        self._headers: dict[bytes, FrameHeader | None] = {}

    def accept(self, frames: Frames) -> AnyMessage | None:
        """The message in ``[topic, header, body]`` if it is of this run, valid and new; else None."""
        if len(frames) != 3:
            return self._reject("frames", f"expected [topic, header, body], got {len(frames)} frame(s)")
        header = self._header(frames[1])
        if header is None or not self._own(header):
            return None
        msg = self._parse(frames[0], frames[2])
        if msg is None:
            return None
        self.sequences.incarnation(msg.source, header.incarnation)
        if not self.sequences.observe((msg.source, topic_of(msg)), msg.seq):
            return None
        self.stats.received += 1
        if isinstance(msg, Heartbeat):
            self.heartbeats.observe(msg)
        return msg

    def splice(self, snapshot: Snapshot) -> list[AnyMessage]:
        """The snapshot's messages not seen yet; afterwards live messages it covers count as duplicates."""
        if not self._own(snapshot.header):
            return []
        self.sequences.incarnation(snapshot.source, snapshot.header.incarnation)
        fresh = [msg for msg in map(self._parse_entry, snapshot.entries) if msg is not None and self._take(msg)]
        for topic, seq in snapshot.seqs.items():
            self.sequences.prime((snapshot.source, topic), seq)
        self.stats.snapshot_messages += len(fresh)
        return fresh

    def _own(self, header: FrameHeader) -> bool:
        """Whether ``header`` is of this subscriber's run (always, without a run id); counts the others."""
        if not self.run_id or header.run == self.run_id:
            return True
        self.stats.foreign += 1
        self._problems.report("foreign", f"dropped a message of run {header.run!r} (this is run {self.run_id!r}): "
                                         "another stack publishes on an endpoint this one reads")
        return False

    def _header(self, raw: bytes) -> FrameHeader | None:
        """The decoded header (cached: one publisher sends the same bytes every time); None if unreadable."""
        header = self._headers.get(raw)
        if header is None and raw not in self._headers:
            try:
                header = msgspec.msgpack.decode(raw, type=FrameHeader)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._reject("header", f"unreadable frame header ({exc}, {len(raw)} bytes)")
                return None
            if len(self._headers) >= _HEADER_CACHE:
                self._headers.clear()
            self._headers[bytes(raw)] = header
        return header

    def _take(self, msg: AnyMessage) -> bool:
        key = (msg.source, topic_of(msg))
        return msg.seq > self.sequences.last(key) and self.sequences.observe(key, msg.seq)

    def _parse_entry(self, entry: tuple[str, bytes]) -> AnyMessage | None:
        return self._parse(entry[0].encode(), entry[1])

    def _parse(self, topic: bytes, body: bytes) -> AnyMessage | None:
        try:
            msg = decode(body)
        except SchemaVersionError as exc:
            return self._reject("schema_version", f"on {topic!r}: {exc}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._reject("undecodable", f"on {topic!r}: {exc} ({len(body)} bytes)")
        return self._check(topic, msg)

    def _check(self, topic: bytes, msg: AnyMessage) -> AnyMessage | None:
        if topic != topic_of(msg).encode():
            return self._reject("topic", f"{type(msg).__name__} sent on topic {topic!r}, expected {topic_of(msg)!r}")
        if msg.seq < 1 or not msg.source:
            return self._reject("unsequenced", f"on {topic!r}: no source/seq (seq={msg.seq}, source={msg.source!r})")
        return msg

    def _reject(self, reason: str, detail: str) -> AnyMessage | None:
        """Count and log a refused message; returns None (nothing to deliver)."""
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        self._problems.report(reason, f"rejected a message: {detail}")
        return None


class _Closable(ABC):
    """Idempotent ``close()`` and use as a context manager, for publishers and subscribers alike."""

    _closed: bool

    def close(self) -> None:
        """Release the sockets and threads; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @abstractmethod
    def _close(self) -> None: ...


class BasePublisher(_Closable):
    """Stamps, encodes, records and sends; subclasses move the frames (``_send``, never blocking)."""

    def __init__(self, name: str, *, snapshot_depth: int = 0, snapshot_kinds: Iterable[str] = DEFAULT_SNAPSHOT_KINDS,
                 clock: Clock | None = None, heartbeat_ms: int = 1_000, run_id: str = "") -> None:
        if not name:
            raise ValueError("a publisher needs a non-empty name")
        self._name = name
        self.header = FrameHeader(run_id, new_incarnation())
        self._header_bytes = self.header.encode()
        self._stats = PublisherStats()
        self._seqs: dict[str, int] = {}
        self.ring = TopicRing(snapshot_depth, snapshot_kinds)
        self.clock: Clock = clock or LiveClock()
        self.heartbeat_ms = heartbeat_ms
        self._problems = ProblemCounter(log)
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def stats(self) -> PublisherStats:
        return self._stats

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, msg: AnyMessage) -> bool:
        """Stamp ``msg`` with this publisher's name and next seq of its topic and send it.

        Returns False when it was dropped (a subscriber's queue is full); the drop
        is counted per topic and logged, and subscribers see the gap in seq.
        """
        self._check_open()
        topic = topic_of(msg)
        seq = self._seqs.get(topic, 0) + 1
        self._seqs[topic] = seq
        body = encode(msgspec.structs.replace(msg, seq=seq, source=self._name))
        self.ring.record(topic, seq, body)
        if self._send(topic.encode(), body):
            self._stats.sent[topic] = self._stats.sent.get(topic, 0) + 1
            return True
        self._count_drop(topic, seq)
        return False

    def heartbeat(self, counters: Mapping[str, int] | None = None) -> None:
        """Publish a :class:`Heartbeat` (topic ``heartbeat.*``) with ``counters`` and this bus's totals."""
        self._check_open()
        self._poll_subscriptions()
        merged = {**self._stats.as_counters(), **(counters or {})}
        self.publish(Heartbeat(symbol=HEARTBEAT_SYMBOL, event_time=self.clock.now_ms(), service=self._name,
                               interval_ms=self.heartbeat_ms, counters=merged))

    def wait_for_subscriptions(self, count: int = 1, timeout_ms: int = 5_000) -> bool:
        """Wait until ``count`` subscriptions in all have reached this publisher (the slow-joiner cure)."""
        self._check_open()
        deadline = time.monotonic() + timeout_ms / 1000
        while self._stats.subscriptions < count:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                return False
            self._await_subscription(min(remaining, 50))
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"publisher {self._name!r} is closed")

    def _count_drop(self, topic: str, seq: int) -> None:
        self._stats.dropped[topic] = self._stats.dropped.get(topic, 0) + 1
        self._problems.report("dropped", f"{self._name} dropped {topic} seq {seq}: a subscriber's queue is full")

    def _poll_subscriptions(self) -> None:
        self._await_subscription(0)

    def _send(self, topic: bytes, body: bytes) -> bool:
        """Send ``[topic, header, body]`` without blocking; False if it could not be queued."""
        return self._send_frames([topic, self._header_bytes, body])

    @abstractmethod
    def _send_frames(self, frames: list[bytes]) -> bool:
        """Send the frames of one message without blocking; False if they could not be queued."""

    @abstractmethod
    def _await_subscription(self, timeout_ms: int) -> None:
        """Count subscriptions that arrived (``stats.subscriptions``), waiting at most ``timeout_ms``."""


class BaseSubscriber(_Closable):
    """Receive loop, catch-up and liveness over an :class:`Intake`; subclasses fetch frames and snapshots."""

    def __init__(self, topics: Iterable[str], *, run_id: str = "") -> None:
        self._intake = Intake(run_id)
        self._prefixes: list[str] = []
        self._closed = False
        for topic in topics:
            self.subscribe(topic)

    @property
    def stats(self) -> SubscriberStats:
        return self._intake.stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def prefixes(self) -> list[str]:
        """The topic prefixes subscribed to."""
        return list(self._prefixes)

    def subscribe(self, prefix: str) -> None:
        """Receive topics starting with ``prefix`` (``"bar."``, ``"bar.BTCUSDT"``, ``""`` = all)."""
        if prefix not in self._prefixes:
            self._prefixes.append(prefix)
            self._subscribe(prefix)

    def unsubscribe(self, prefix: str) -> None:
        if prefix in self._prefixes:
            self._prefixes.remove(prefix)
            self._unsubscribe(prefix)

    def receive(self, timeout_ms: int) -> AnyMessage | None:
        """The next valid, new message, or None after ``timeout_ms`` (rejects are counted, never raised)."""
        self._check_open()
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            frames = self._recv_frames(remaining)
            if frames is None:
                return None
            msg = self._intake.accept(frames)
            if msg is not None:
                return msg
            if remaining == 0:
                return None

    def catch_up(self, timeout_ms: int = 2_000) -> list[AnyMessage]:
        """Recent messages of the subscribed prefixes from the publishers' snapshots, oldest first.

        Live messages they cover are then skipped as duplicates and the next
        live message follows without a gap. Call after subscribing.
        """
        self._check_open()
        fresh: list[AnyMessage] = []
        for snapshot in self._fetch_snapshots(self.prefixes, timeout_ms):
            fresh.extend(self._intake.splice(snapshot))
        fresh.sort(key=lambda m: (m.event_time, topic_of(m), m.source, m.seq))
        return fresh

    def last_heartbeat(self, source: str) -> int | None:
        """Event time of ``source``'s last heartbeat, or None if none was received."""
        return self._intake.heartbeats.last(source)

    def dead_publishers(self, now_ms: int, timeout_ms: int) -> list[str]:
        """Publishers heard from whose last heartbeat is more than ``timeout_ms`` before ``now_ms``."""
        return self._intake.heartbeats.dead(now_ms, timeout_ms)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"subscriber to {self._prefixes} is closed")

    @abstractmethod
    def _subscribe(self, prefix: str) -> None: ...

    @abstractmethod
    def _unsubscribe(self, prefix: str) -> None: ...

    @abstractmethod
    def _recv_frames(self, timeout_ms: int) -> Frames | None:
        """The next frames, waiting at most ``timeout_ms`` (0 = only what is there); None if none."""

    @abstractmethod
    def _fetch_snapshots(self, prefixes: Sequence[str], timeout_ms: int) -> list[Snapshot]: ...
