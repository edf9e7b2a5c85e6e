"""The snapshot protocol (late joiners catch up on recent messages) and its ZeroMQ server thread.

As in the ZeroMQ guide's clone pattern (clonecli3), a subscriber first
subscribes, then asks the publisher's snapshot socket (ROUTER; the subscriber
uses a DEALER) for the recent messages of a topic prefix::

    request: [b"DOPE-SNAP1", request_id (8 bytes, big endian), prefix]
    reply:   [b"DOPE-SNAP1", header, topic, body, topic, body, ...]

``header`` is msgpack ``{request_id, source, seqs, run, incarnation}``: ``seqs`` is the
publisher's current seq of each topic in the reply, so the subscriber skips
live messages the snapshot already covers and expects the next one after it;
``run`` and ``incarnation`` are those of the publisher's frame header (a
subscriber ignores the snapshot of another run).
The reply is one multipart message, so it arrives whole or not at all; the end
of the message is the end marker. ``request_id`` lets a subscriber ignore a
late reply to a request it gave up on.

The server runs in its own thread with its own socket (ZeroMQ sockets are not
thread-safe) and reads the publisher's :class:`~dope.transport.base.TopicRing`
under the ring's lock, so the publishing thread never has to poll anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import zmq

from dope.logs import ProblemCounter
from dope.transport.base import NO_RUN, FrameHeader, Snapshot, TopicRing

log = logging.getLogger("dope.transport.snapshot")

PROTOCOL: Final = b"DOPE-SNAP1"
_POLL_MS: Final = 25


class SnapshotProtocolError(ValueError):
    """A snapshot request or reply that does not follow the protocol."""


class _Header(msgspec.Struct, frozen=True):
    request_id: int
    source: str
    seqs: dict[str, int]
    run: str = ""
    incarnation: int = 0


def request_frames(request_id: int, prefix: str) -> list[bytes]:
    """The frames of a request for the recent messages of topics starting with ``prefix``."""
    return [PROTOCOL, request_id.to_bytes(8, "big"), prefix.encode()]


def parse_request(frames: Sequence[bytes]) -> tuple[int, str]:
    """``(request_id, prefix)`` of a request; raises :class:`SnapshotProtocolError`."""
    if len(frames) != 3 or frames[0] != PROTOCOL or len(frames[1]) != 8:
        raise SnapshotProtocolError(f"not a {PROTOCOL.decode()} request: {len(frames)} frame(s)")
    try:
        return int.from_bytes(frames[1], "big"), bytes(frames[2]).decode()
    except UnicodeDecodeError as exc:
        raise SnapshotProtocolError(f"prefix is not UTF-8: {exc}") from None


def reply_frames(request_id: int, snapshot: Snapshot) -> list[bytes]:
    """The frames of the reply carrying ``snapshot``."""
    header = msgspec.msgpack.encode(_Header(request_id, snapshot.source, snapshot.seqs, snapshot.header.run,
                                            snapshot.header.incarnation))
    return [PROTOCOL, header, *(part for topic, body in snapshot.entries for part in (topic.encode(), body))]


def parse_reply(frames: Sequence[bytes]) -> tuple[int, Snapshot]:
    """``(request_id, snapshot)`` of a reply; raises :class:`SnapshotProtocolError`."""
    if len(frames) < 2 or frames[0] != PROTOCOL or len(frames) % 2:
        raise SnapshotProtocolError(f"not a {PROTOCOL.decode()} reply: {len(frames)} frame(s)")
    try:
        header = msgspec.msgpack.decode(frames[1], type=_Header)
        entries = [(bytes(frames[i]).decode(), bytes(frames[i + 1])) for i in range(2, len(frames), 2)]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise SnapshotProtocolError(f"bad snapshot reply: {exc}") from None
    return header.request_id, Snapshot(header.source, entries, dict(header.seqs),
                                       FrameHeader(header.run, header.incarnation))


class SnapshotServer:
    """Serves a publisher's ring on a ROUTER socket from a background thread.

    ``start()`` binds (raising the bind error, if any) and returns; ``endpoint``
    is then the bound address (a ``*`` port resolved). ``configure`` (e.g. CURVE's ``apply``)
    sets up the socket before it binds.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, ring: TopicRing, source: str,
                 configure: Callable[[zmq.Socket[bytes]], None] | None = None,
                 header: FrameHeader = NO_RUN) -> None:
        self._context = context
        self._configure = configure
        self._requested = endpoint
        self._ring = ring
        self._source = source
        self._header = header
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: zmq.ZMQError | None = None
        self._endpoint = ""
        self._thread = threading.Thread(target=self._run, name=f"dope-snapshot-{source}", daemon=True)
        self.problems = ProblemCounter(log)
        self.served = 0

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = 0  # a reply is one message; never drop it for lack of room
        if self._configure is not None:
            self._configure(sock)
        try:
            sock.bind(self._requested)
            self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
        self._ready.set()
        try:
            if self._error is None:
                self._serve_until_stopped(sock)
        finally:
            sock.close()

    def _serve_until_stopped(self, sock: zmq.Socket[bytes]) -> None:
        while not self._stop.is_set():
            if sock.poll(_POLL_MS, zmq.POLLIN):
                self._answer(sock, sock.recv_multipart())

    def _answer(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        try:
            request_id, prefix = parse_request(frames[1:])
        except SnapshotProtocolError as exc:
            self.problems.report("bad_request", f"snapshot server {self._source}: {exc}")
            return
        sock.send_multipart([frames[0], *reply_frames(request_id, self._ring.snapshot(prefix, self._source, self._header))])
        self.served += 1
