"""DOPE's message bus: ZeroMQ publish/subscribe between processes, and an in-memory twin for tests.

Frames are ``[topic, header, body]``: the topic is ``<kind>.<symbol>`` (``bar.BTCUSDT``,
``heartbeat.*``), the header the publisher's run id and incarnation, the body the
msgpack of the message, stamped with the publisher's name and a per-topic sequence
number. See ``docs/bus.md``.

>>> bus = InMemoryBus()
>>> sub = bus.subscriber(["bar."])
>>> pub = bus.publisher("collector")
>>> pub.heartbeat({})            # not subscribed to heartbeats: not received
>>> sub.receive(timeout_ms=0) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from dope.clock import Clock
from dope.transport.base import (
    BasePublisher,
    BaseSubscriber,
    BusError,
    FrameHeader,
    Publisher,
    PublisherStats,
    Snapshot,
    Subscriber,
    SubscriberStats,
    TopicRing,
)
from dope.transport.config import BusConfig
from dope.transport.curve import CurveClient, CurveKeyError, CurveServer, client_curve, server_curve
from dope.transport.memory import InMemoryBus, InMemoryPublisher, InMemorySubscriber, memory_waiter
from dope.transport.snapshot import SnapshotProtocolError
from dope.transport.zmq_bus import ZmqPublisher, ZmqSubscriber, check_endpoint, zmq_waiter

__all__ = [
    "BasePublisher",
    "BaseSubscriber",
    "BusError",
    "CurveClient",
    "CurveKeyError",
    "CurveServer",
    "FrameHeader",
    "InMemoryBus",
    "InMemoryPublisher",
    "InMemorySubscriber",
    "Publisher",
    "PublisherStats",
    "Snapshot",
    "SnapshotProtocolError",
    "Subscriber",
    "SubscriberStats",
    "TopicRing",
    "ZmqPublisher",
    "ZmqSubscriber",
    "any_waiter",
    "check_endpoint",
    "client_curve",
    "open_publisher",
    "open_subscriber",
    "server_curve",
]


def open_publisher(config: BusConfig, name: str, *, endpoint: str | None = None,
                   snapshot_endpoint: str | None = None, clock: Clock | None = None) -> ZmqPublisher:
    """A ZeroMQ publisher bound to ``config.publish`` (or ``endpoint``), serving snapshots on ``config.snapshot``.

    CURVE and the plaintext-beyond-loopback rule come from ``config`` (``bus.curve_*``).
    """
    return ZmqPublisher(endpoint or config.publish, name, send_hwm=config.send_hwm,
                        snapshot_endpoint=(snapshot_endpoint or config.snapshot) or None,
                        snapshot_depth=config.snapshot_bars, clock=clock, heartbeat_ms=config.heartbeat_ms,
                        linger_ms=config.linger_ms, curve=server_curve(config),
                        allow_plaintext_remote=config.allow_plaintext_remote, run_id=config.run_id)


def open_subscriber(config: BusConfig, topics: Iterable[str], *, endpoints: Sequence[str] | None = None,
                    snapshot_endpoints: Sequence[str] | None = None) -> ZmqSubscriber:
    """A ZeroMQ subscriber to ``topics`` connected to ``config.publish`` (or ``endpoints``) and its snapshot socket."""
    snapshots = snapshot_endpoints if snapshot_endpoints is not None else [e for e in [config.snapshot] if e]
    return ZmqSubscriber(endpoints or [config.publish], topics, receive_hwm=config.receive_hwm,
                         snapshot_endpoint=snapshots, curve=client_curve(config), run_id=config.run_id)


Waiter = Callable[[int], bool]
"""Waits at most ``timeout_ms`` for a frame at any of several subscribers: True as soon as one has one."""


def any_waiter(subscribers: Sequence[Subscriber]) -> Waiter:
    """One wait that covers every one of ``subscribers`` (ZeroMQ ones, or in-memory ones of one bus), so a
    service that reads several is woken by whichever has a message first, and only then."""
    if subscribers and all(isinstance(sub, ZmqSubscriber) for sub in subscribers):
        return zmq_waiter([sub for sub in subscribers if isinstance(sub, ZmqSubscriber)])
    if subscribers and all(isinstance(sub, InMemorySubscriber) for sub in subscribers):
        return memory_waiter([sub for sub in subscribers if isinstance(sub, InMemorySubscriber)])
    kinds = sorted({type(sub).__name__ for sub in subscribers})
    raise BusError(f"no one wait covers subscribers of kinds {', '.join(kinds) or '(none)'}: "
                   "use ZeroMQ subscribers, or in-memory ones of one bus")
