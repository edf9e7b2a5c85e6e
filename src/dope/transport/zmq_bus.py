"""The bus over ZeroMQ: an XPUB publisher that binds, SUB subscribers that connect.

The publisher's XPUB socket has ``XPUB_NODROP`` set, so when a subscriber's
queue (``send_hwm`` here, ``receive_hwm`` there, plus the kernel's buffers)
is full the non-blocking send fails at once: the message is dropped *at the
publisher*, counted and logged, and every subscriber sees the hole in ``seq``.
(ZeroMQ sends to all matching subscribers or none, so one stalled subscriber
makes the others see the gap too; give every subscriber a high-water mark that
covers its worst stall.) ``publish`` never blocks, so an asyncio loop can call
it. The snapshot socket is served by a background thread
(:class:`~dope.transport.snapshot.SnapshotServer`). With ``curve`` both sockets
require ZeroMQ CURVE (:mod:`dope.transport.curve`); without it, binding beyond
loopback is refused unless ``allow_plaintext_remote``, and a subscriber that
connects beyond loopback logs a warning. ``run_id`` names the run: a publisher
puts it in every frame header, a subscriber drops (and counts) frames of
other runs.

>>> with ZmqPublisher("tcp://127.0.0.1:*", "doc", snapshot_endpoint="tcp://127.0.0.1:*") as pub:
...     pub.endpoint.startswith("tcp://127.0.0.1:")
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, cast

import zmq

from dope.clock import Clock
from dope.logs import ProblemCounter
from dope.transport.base import (
    DEFAULT_SNAPSHOT_KINDS,
    BasePublisher,
    BaseSubscriber,
    BusError,
    Frames,
    Snapshot,
)
from dope.transport.curve import (
    CurveClient,
    CurveServer,
    HandshakeMonitor,
    KeyAuthorizer,
    check_plaintext_bind,
    is_local_endpoint,
    start_authenticator,
    stop_authenticator,
)
from dope.transport.snapshot import SnapshotProtocolError, SnapshotServer, parse_reply, request_frames

log = logging.getLogger("dope.transport.zmq")

SCHEMES: Final = ("tcp://", "ipc://", "inproc://")
_SUBSCRIBE: Final = 1

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a tcp, ipc or inproc address; ``tcp://host:0`` becomes ``tcp://host:*`` (any port)."""
    if not endpoint.startswith(SCHEMES):
        raise BusError(f"bus endpoint {endpoint!r} must start with one of {', '.join(SCHEMES)}")
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        return endpoint[:-1] + "*"
    return endpoint


def _bind(sock: Socket, endpoint: str) -> str:
    try:
        sock.bind(check_endpoint(endpoint))
    except zmq.ZMQError as exc:
        raise BusError(f"cannot bind bus endpoint {endpoint!r}: {exc}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class ZmqPublisher(BasePublisher):
    """Publishes on an XPUB socket bound to ``endpoint``; optionally serves snapshots on ``snapshot_endpoint``.

    Not thread-safe: publish from one thread. ``linger_ms`` is how long
    closing waits for queued messages to leave. ``curve`` makes both sockets
    CURVE servers that accept only the authorized client keys.
    """

    def __init__(self, endpoint: str, name: str, *, send_hwm: int = 100_000, snapshot_endpoint: str | None = None,
                 snapshot_depth: int = 360, snapshot_kinds: Iterable[str] = DEFAULT_SNAPSHOT_KINDS,
                 clock: Clock | None = None, heartbeat_ms: int = 1_000, linger_ms: int = 1_000,
                 context: Context | None = None, curve: CurveServer | None = None,
                 allow_plaintext_remote: bool = False, run_id: str = "") -> None:
        super().__init__(name, snapshot_depth=snapshot_depth if snapshot_endpoint else 0,
                         snapshot_kinds=snapshot_kinds, clock=clock, heartbeat_ms=heartbeat_ms, run_id=run_id)
        for bound in (endpoint, snapshot_endpoint or ""):
            check_plaintext_bind(bound, curve=curve is not None, allow=allow_plaintext_remote)
        self._own_context = context is None
        self._context: Context = context if context is not None else zmq.Context()
        self._curve = curve
        self._authorizer: KeyAuthorizer | None = None
        self._socket = self._xpub(send_hwm, linger_ms)
        self._handshakes = None if curve is None else HandshakeMonitor(self._socket, name)
        self._snapshot: SnapshotServer | None = None
        try:
            if curve is not None:
                self._authorizer = start_authenticator(self._context, curve, name)
            self._endpoint = _bind(self._socket, endpoint)
            self._snapshot = self._start_snapshot_server(snapshot_endpoint)
        except BaseException:
            self._close()
            raise

    @property
    def endpoint(self) -> str:
        """The bound address (with the real port when ``*`` or 0 was asked for)."""
        return self._endpoint

    @property
    def snapshot_endpoint(self) -> str | None:
        """The snapshot socket's bound address, or None when there is none."""
        return None if self._snapshot is None else self._snapshot.endpoint

    @property
    def curve_denied(self) -> int:
        """CURVE clients refused for an unauthorized key (0 without CURVE)."""
        return 0 if self._authorizer is None else self._authorizer.denied

    @property
    def curve_failed(self) -> int:
        """Failed handshakes on the publishing socket, e.g. peers without CURVE (counted at each heartbeat)."""
        return 0 if self._handshakes is None else self._handshakes.failed

    def heartbeat(self, counters: Mapping[str, int] | None = None) -> None:
        """As :meth:`BasePublisher.heartbeat`, plus ``bus.curve_denied``/``bus.curve_failed`` with CURVE."""
        extra: dict[str, int] = {}
        if self._authorizer is not None and self._handshakes is not None:
            extra = {"bus.curve_denied": self._authorizer.denied, "bus.curve_failed": self._handshakes.poll()}
        super().heartbeat({**extra, **(counters or {})})

    def _xpub(self, send_hwm: int, linger_ms: int) -> Socket:
        sock = self._context.socket(zmq.XPUB)
        sock.linger = linger_ms
        sock.sndhwm = send_hwm
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        if self._curve is not None:
            self._curve.apply(sock)
        return sock

    def _start_snapshot_server(self, endpoint: str | None) -> SnapshotServer | None:
        if endpoint is None:
            return None
        server = SnapshotServer(self._context, check_endpoint(endpoint), self.ring, self.name,
                                configure=None if self._curve is None else self._curve.apply, header=self.header)
        try:
            server.start()
        except zmq.ZMQError as exc:
            raise BusError(f"cannot bind snapshot endpoint {endpoint!r}: {exc}") from None
        return server

    def _send_frames(self, frames: list[bytes]) -> bool:
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _await_subscription(self, timeout_ms: int) -> None:
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            event = self._socket.recv(zmq.NOBLOCK)
            if event[:1] == bytes([_SUBSCRIBE]):
                self._stats.subscriptions += 1
            timeout_ms = 0

    def _close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.stop()
        if self._handshakes is not None:
            self._handshakes.close()
        self._socket.close()
        if self._authorizer is not None:
            stop_authenticator(self._context)
        if self._own_context:
            self._context.term()


class ZmqSubscriber(BaseSubscriber):
    """A SUB socket connected to one or more publishers, and DEALERs to their snapshot sockets.

    Not thread-safe: use it from one thread. ``curve`` makes every socket a CURVE
    client of the publishers' key (all publishers it connects to share that key); without it,
    an endpoint beyond loopback is connected to with a warning. With ``run_id``, messages of
    other runs are dropped and counted (``stats.foreign``).
    """

    def __init__(self, endpoints: Sequence[str], topics: Iterable[str] = (), *, receive_hwm: int = 100_000,
                 snapshot_endpoint: str | Sequence[str] | None = None, context: Context | None = None,
                 curve: CurveClient | None = None, run_id: str = "") -> None:
        self._own_context = context is None
        self._context: Context = context if context is not None else zmq.Context()
        self._curve = curve
        self._socket = self._context.socket(zmq.SUB)
        if curve is not None:
            curve.apply(self._socket)
        self._socket.linger = 0
        self._socket.rcvhwm = receive_hwm
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._dealers: list[Socket] = []
        self._request_id = 0
        self._problems = ProblemCounter(log)
        try:
            self._connect(endpoints, _as_list(snapshot_endpoint))
        except BaseException:
            self._close()
            raise
        super().__init__(topics, run_id=run_id)

    def _connect(self, endpoints: Sequence[str], snapshot_endpoints: list[str]) -> None:
        if not endpoints:
            raise BusError("a subscriber needs at least one endpoint to connect to")
        for endpoint in [*endpoints, *snapshot_endpoints]:
            warn_if_plaintext_remote(endpoint, curve=self._curve is not None)
        for endpoint in endpoints:
            self._socket.connect(check_endpoint(endpoint))
        for endpoint in snapshot_endpoints:
            dealer = self._context.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.rcvhwm = 0
            if self._curve is not None:
                self._curve.apply(dealer)
            self._dealers.append(dealer)
            dealer.connect(check_endpoint(endpoint))

    def _subscribe(self, prefix: str) -> None:
        self._socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    def _unsubscribe(self, prefix: str) -> None:
        self._socket.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())

    def _recv_frames(self, timeout_ms: int) -> Frames | None:
        # Asking the socket (EVENTS) raises no exception when nothing waits, and the poller is made once:
        # both are paid on every wake-up of a service, on the path of every bar.
        waiting = cast(int, self._socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN
        if not waiting and (timeout_ms <= 0 or not self._poller.poll(timeout_ms)):
            return None
        try:
            return self._socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def watch(self, poller: zmq.Poller) -> None:
        """Register this subscriber's SUB socket on ``poller``, so one wait can cover several subscribers."""
        poller.register(self._socket, zmq.POLLIN)

    def _fetch_snapshots(self, prefixes: Sequence[str], timeout_ms: int) -> list[Snapshot]:
        deadline = time.monotonic() + timeout_ms / 1000
        snapshots: list[Snapshot] = []
        for dealer in self._dealers:
            for prefix in prefixes:
                snapshot = self._request(dealer, prefix, deadline)
                if snapshot is not None:
                    snapshots.append(snapshot)
        return snapshots

    def _request(self, dealer: Socket, prefix: str, deadline: float) -> Snapshot | None:
        self._request_id += 1
        dealer.send_multipart(request_frames(self._request_id, prefix), zmq.NOBLOCK)
        while (remaining := int((deadline - time.monotonic()) * 1000)) > 0:
            if dealer.poll(remaining, zmq.POLLIN):
                snapshot = self._reply(dealer.recv_multipart())
                if snapshot is not None:
                    return snapshot
        endpoint = dealer.getsockopt_string(zmq.LAST_ENDPOINT)
        self._problems.report("snapshot_timeout", f"no snapshot of {prefix!r} from {endpoint} in time")
        return None

    def _reply(self, frames: list[bytes]) -> Snapshot | None:
        try:
            request_id, snapshot = parse_reply(frames)
        except SnapshotProtocolError as exc:
            self._problems.report("snapshot_reply", str(exc))
            return None
        return snapshot if request_id == self._request_id else None

    def _close(self) -> None:
        for dealer in self._dealers:
            dealer.close()
        self._socket.close()
        if self._own_context:
            self._context.term()


def zmq_waiter(subscribers: Sequence[ZmqSubscriber]) -> Callable[[int], bool]:
    """A wait of at most ``timeout_ms`` that ends (True) as soon as one of ``subscribers`` has a frame waiting."""
    poller = zmq.Poller()
    for sub in subscribers:
        sub.watch(poller)
    return lambda timeout_ms: bool(poller.poll(timeout_ms))


def warn_if_plaintext_remote(endpoint: str, *, curve: bool) -> bool:
    """Log a warning when connecting to ``endpoint`` beyond loopback without CURVE; True if it warned."""
    if curve or is_local_endpoint(endpoint):
        return False
    log.warning("connecting to %s WITHOUT encryption or authentication: anyone on the path can read and forge "
                "this stream; configure bus.curve_server_public and bus.curve_client_secret (docs/bus.md, "
                "Security)", endpoint)
    return True


def _as_list(endpoints: str | Sequence[str] | None) -> list[str]:
    if endpoints is None:
        return []
    return [endpoints] if isinstance(endpoints, str) else list(endpoints)
