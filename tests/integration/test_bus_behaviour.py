"""One behavioural suite for every bus: in memory, ZeroMQ over tcp and ZeroMQ over ipc, in one process.

Each ``Kit`` makes publishers, subscribers connected to them and a raw
(foreign) sender, and waits until subscriptions have landed, so no test
depends on sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec
import pytest
import zmq

from dope.clock import SimulatedClock
from dope.messages import AnyMessage, Bar, Heartbeat, Trade, encode
from dope.transport import FrameHeader, InMemoryBus, Publisher, Subscriber, ZmqPublisher, ZmqSubscriber

RawSend = Callable[[list[bytes]], None]


def make_bar(symbol: str, i: int, interval_ms: int = 10_000) -> Bar:
    """The ``i``-th bar of a made-up series."""
    open_time = 1_723_161_600_000 + i * interval_ms
    price = 60_000.0 + i
    return Bar(symbol=symbol, event_time=open_time + interval_ms - 1, interval_ms=interval_ms, open_time=open_time,
               close_time=open_time + interval_ms - 1, open=price, high=price + 5, low=price - 5, close=price + 1,
               volume=1.5, quote_volume=1.5 * price, count=3, taker_buy_volume=0.5, taker_buy_quote_volume=0.5 * price,
               vwap=price, empty=False, first_trade_id=3 * i, last_trade_id=3 * i + 2)


def make_trade(symbol: str, i: int) -> Trade:
    return Trade(symbol=symbol, event_time=1_723_161_600_000 + i, trade_id=i, price=1.0 + i, qty=0.1,
                 is_buyer_maker=bool(i % 2))


class Kit(Protocol):
    def publisher(self, name: str, *, hwm: int = 1_000, depth: int = 0, clock: SimulatedClock | None = None
                  ) -> Publisher: ...

    def subscriber(self, topics: list[str], *, hwm: int = 1_000) -> Subscriber: ...

    def raw_sender(self) -> RawSend: ...

    def close(self) -> None: ...


class MemoryKit:
    def __init__(self, tmp_path: Path) -> None:
        self.bus = InMemoryBus(hwm=1_000, snapshot_depth=0)
        self.depth = 0

    def publisher(self, name: str, *, hwm: int = 1_000, depth: int = 0, clock: SimulatedClock | None = None
                  ) -> Publisher:
        self.bus.snapshot_depth = depth
        return self.bus.publisher(name, clock=clock)

    def subscriber(self, topics: list[str], *, hwm: int = 1_000) -> Subscriber:
        return self.bus.subscriber(topics, hwm=hwm)

    def raw_sender(self) -> RawSend:
        def send(frames: list[bytes]) -> None:
            self.bus.inject(frames)
        return send

    def close(self) -> None:
        pass


class ZmqKit:
    def __init__(self, tmp_path: Path, transport: str) -> None:
        self.tmp_path = tmp_path
        self.transport = transport
        self.publishers: list[tuple[ZmqPublisher, int]] = []
        self.raw: list[zmq.Socket[bytes]] = []
        self.subscribers: list[ZmqSubscriber] = []
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.n = 0

    def endpoint(self) -> str:
        self.n += 1
        if self.transport == "tcp":
            return "tcp://127.0.0.1:0"
        return f"ipc://{self.tmp_path}/bus{self.n}.sock"

    def publisher(self, name: str, *, hwm: int = 1_000, depth: int = 0, clock: SimulatedClock | None = None
                  ) -> Publisher:
        pub = ZmqPublisher(self.endpoint(), name, send_hwm=hwm, snapshot_endpoint=self.endpoint() if depth else None,
                           snapshot_depth=depth, clock=clock, linger_ms=0)
        self.publishers.append((pub, 0))
        return pub

    def subscriber(self, topics: list[str], *, hwm: int = 1_000) -> Subscriber:
        self.publishers = [(pub, n) for pub, n in self.publishers if not pub.closed]
        pubs = [pub for pub, _ in self.publishers]
        endpoints = [pub.endpoint for pub in pubs] + [s.getsockopt_string(zmq.LAST_ENDPOINT) for s in self.raw]
        snapshots = [pub.snapshot_endpoint for pub in pubs if pub.snapshot_endpoint]
        sub = ZmqSubscriber(endpoints, topics, receive_hwm=hwm, snapshot_endpoint=snapshots)
        self.subscribers.append(sub)
        self._wait_landed(len(topics))
        return sub

    def _wait_landed(self, count: int) -> None:
        self.publishers = [(pub, n + count) for pub, n in self.publishers]
        for pub, expected in self.publishers:
            assert pub.wait_for_subscriptions(expected, timeout_ms=5_000)
        for raw in self.raw:
            for _ in range(count):
                assert raw.poll(5_000) and raw.recv()[:1] == b"\x01"

    def raw_sender(self) -> RawSend:
        sock = self.context.socket(zmq.XPUB)
        sock.linger = 0
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.bind("tcp://127.0.0.1:*")
        self.raw.append(sock)
        def send(frames: list[bytes]) -> None:
            sock.send_multipart(frames)
        return send

    def close(self) -> None:
        for sub in self.subscribers:
            sub.close()
        for pub, _ in self.publishers:
            pub.close()
        for sock in self.raw:
            sock.close()
        self.context.term()


@pytest.fixture(params=["memory", "tcp", "ipc"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    made: Kit = MemoryKit(tmp_path) if request.param == "memory" else ZmqKit(tmp_path, request.param)
    yield made
    made.close()


def receive_all(sub: Subscriber, count: int, timeout_ms: int = 5_000) -> list[AnyMessage]:
    """``count`` messages, failing if they do not all come within the timeout."""
    got: list[AnyMessage] = []
    deadline = time.monotonic() + timeout_ms / 1000
    while len(got) < count and time.monotonic() < deadline:
        msg = sub.receive(timeout_ms=100)
        if msg is not None:
            got.append(msg)
    assert len(got) == count, f"received {len(got)} of {count}"
    return got


def test_messages_arrive_stamped_in_order_per_topic_prefix(kit: Kit) -> None:
    pub = kit.publisher("collector")
    sub = kit.subscriber(["bar.BTC", "trade."])
    for i in range(20):
        assert pub.publish(make_bar("BTCUSDT", i))
        assert pub.publish(make_bar("ETHUSDT", i))  # not subscribed: never received
        assert pub.publish(make_trade("ETHUSDT", i))
    got = receive_all(sub, 40)
    bars = [m for m in got if isinstance(m, Bar)]
    assert [m.seq for m in bars] == list(range(1, 21))
    assert [m.open_time for m in bars] == [make_bar("BTCUSDT", i).open_time for i in range(20)]
    assert {m.source for m in got} == {"collector"}
    assert bars[3] == msgspec.structs.replace(make_bar("BTCUSDT", 3), seq=4, source="collector")
    assert sub.receive(timeout_ms=50) is None
    assert sub.stats.received == 40 and sub.stats.total_gaps == 0 and sub.stats.total_rejected == 0
    assert pub.stats.sent == {"bar.BTCUSDT": 20, "bar.ETHUSDT": 20, "trade.ETHUSDT": 20}
    assert pub.stats.total_dropped == 0


def test_streams_of_several_publishers_are_tracked_apart(kit: Kit) -> None:
    pubs = [kit.publisher("a"), kit.publisher("b")]
    sub = kit.subscriber(["bar."])
    for i in range(10):
        for pub in pubs:
            assert pub.publish(make_bar("BTCUSDT", i))
    got = receive_all(sub, 20)
    for name in ("a", "b"):
        assert [m.seq for m in got if m.source == name] == list(range(1, 11))
    assert sub.stats.total_gaps == 0 and sub.stats.duplicates == 0


def flood_until_dropped(pub: Publisher, symbol: str, minimum: int, cap: int = 400_000) -> int:
    """Publish bars until at least ``minimum`` were dropped; the number published."""
    n = 0
    while pub.stats.total_dropped < minimum and n < cap:
        pub.publish(make_bar(symbol, n))
        n += 1
    return n


def publish_until_sent(pub: Publisher, msg: AnyMessage, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pub.publish(msg):
        assert time.monotonic() < deadline, "publisher never recovered"
        time.sleep(0.001)


def drain_until_idle(sub: Subscriber, idle_ms: int = 200) -> list[AnyMessage]:
    got: list[AnyMessage] = []
    while (msg := sub.receive(timeout_ms=idle_ms)) is not None:
        got.append(msg)
    return got


def drain_until_seq(sub: Subscriber, seq: int, timeout_s: float = 10.0) -> list[AnyMessage]:
    got: list[AnyMessage] = []
    deadline = time.monotonic() + timeout_s
    while not got or got[-1].seq < seq:  # noqa: SIM113
        assert time.monotonic() < deadline, f"last seq received {got[-1].seq if got else None}, wanted {seq}"
        msg = sub.receive(timeout_ms=100)
        if msg is not None:
            got.append(msg)
    return got


def test_drops_at_a_full_queue_are_counted_and_seen_as_gaps(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    pub = kit.publisher("flood", hwm=10)
    sub = kit.subscriber(["bar."], hwm=10)  # and it does not read while the publisher floods
    with caplog.at_level(logging.WARNING, logger="dope.transport"):
        n = flood_until_dropped(pub, "BTCUSDT", minimum=50)
        got = drain_until_idle(sub)                      # the subscriber wakes up
        publish_until_sent(pub, make_bar("BTCUSDT", n))  # a last one, so trailing drops show as a gap too
        got += drain_until_seq(sub, pub.stats.total_sent + pub.stats.total_dropped)
    dropped = pub.stats.dropped["bar.BTCUSDT"]
    assert dropped >= 50
    assert sub.stats.gaps == {("flood", "bar.BTCUSDT"): dropped}
    assert len(got) == pub.stats.sent["bar.BTCUSDT"] == sub.stats.received
    assert [m.seq for m in got] == sorted(m.seq for m in got)
    assert any("dropped bar.BTCUSDT" in r.getMessage() for r in caplog.records)
    assert any("gap on bar.BTCUSDT from flood" in r.getMessage() for r in caplog.records)


def test_bad_frames_are_rejected_counted_and_logged_never_raised(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    send = kit.raw_sender()
    sub = kit.subscriber(["bar."])
    good = make_bar("BTCUSDT", 1)
    stamped = msgspec.structs.replace(good, seq=1, source="raw")
    head = FrameHeader("", 1).encode()
    with caplog.at_level(logging.WARNING, logger="dope.transport"):
        send([b"bar.BTCUSDT"])                                          # one frame
        send([b"bar.BTCUSDT", encode(stamped)])                          # no header (the old two frames)
        send([b"bar.BTCUSDT", b"\x93\xa1x", encode(stamped)])             # unreadable header
        send([b"bar.BTCUSDT", head, b"\xc1 not msgpack"])                # garbage body
        send([b"bar.BTCUSDT", head, encode(msgspec.structs.replace(stamped, v=2))])  # other schema version
        send([b"bar.ETHUSDT", head, encode(stamped)])                    # topic does not match
        send([b"bar.BTCUSDT", head, encode(good)])                       # no seq, no source
        send([b"bar.BTCUSDT", head, encode(stamped)])                    # fine
        assert sub.receive(timeout_ms=2_000) == stamped
    assert sub.stats.rejected == {"frames": 2, "header": 1, "undecodable": 1, "schema_version": 1, "topic": 1,
                                  "unsequenced": 1}
    assert sub.stats.received == 1
    assert any("schema version 2" in r.getMessage() for r in caplog.records)


def test_heartbeats_tell_when_a_publisher_went_quiet(kit: Kit) -> None:
    clock = SimulatedClock(10_000)
    pub = kit.publisher("collector", clock=clock)
    sub = kit.subscriber(["heartbeat."])
    pub.publish(make_bar("BTCUSDT", 0))  # counted in the heartbeat, not received
    pub.heartbeat({"bars": 7})
    beat = sub.receive(timeout_ms=2_000)
    assert isinstance(beat, Heartbeat) and beat.symbol == "*" and beat.service == "collector"
    assert beat.counters == {"bus.sent": 1, "bus.dropped": 0, "bars": 7}
    assert sub.last_heartbeat("collector") == 10_000 and sub.last_heartbeat("other") is None
    assert sub.dead_publishers(now_ms=12_000, timeout_ms=3_000) == []
    assert sub.dead_publishers(now_ms=13_001, timeout_ms=3_000) == ["collector"]
    clock.advance_to(13_000)
    pub.heartbeat({"bars": 8})
    assert isinstance(sub.receive(timeout_ms=2_000), Heartbeat)
    assert sub.dead_publishers(now_ms=13_001, timeout_ms=3_000) == []


def test_late_joiner_catches_up_then_follows_live_without_gap_or_duplicate(kit: Kit) -> None:
    pub = kit.publisher("collector", depth=5)
    for i in range(12):
        for symbol in ("BTCUSDT", "ETHUSDT"):
            pub.publish(make_bar(symbol, i))
        pub.publish(make_trade("BTCUSDT", i))  # trades are not kept for late joiners
    sub = kit.subscriber(["bar."])
    pub.publish(make_bar("BTCUSDT", 12))       # live and in the snapshot: must come once
    recent = sub.catch_up(timeout_ms=5_000)
    assert [(m.symbol, m.seq) for m in recent if m.symbol == "BTCUSDT"] == [("BTCUSDT", s) for s in range(9, 14)]
    assert [(m.symbol, m.seq) for m in recent if m.symbol == "ETHUSDT"] == [("ETHUSDT", s) for s in range(8, 13)]
    assert [m.event_time for m in recent] == sorted(m.event_time for m in recent)
    for i in (13, 14):
        pub.publish(make_bar("BTCUSDT", i))
        pub.publish(make_bar("ETHUSDT", i - 1))
    live = receive_all(sub, 4)
    assert [(m.symbol, m.seq) for m in live] == [("BTCUSDT", 14), ("ETHUSDT", 13), ("BTCUSDT", 15), ("ETHUSDT", 14)]
    assert sub.receive(timeout_ms=50) is None
    assert sub.stats.total_gaps == 0 and sub.stats.duplicates == 1 and sub.stats.snapshot_messages == 10


def test_catch_up_without_a_snapshot_source_returns_nothing(kit: Kit) -> None:
    pub = kit.publisher("collector")
    sub = kit.subscriber(["bar."])
    pub.publish(make_bar("BTCUSDT", 0))
    assert sub.catch_up(timeout_ms=200) == []
    assert receive_all(sub, 1)[0].seq == 1


def test_publisher_and_subscriber_close_and_refuse_use_after(kit: Kit) -> None:
    with kit.publisher("p") as pub:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(make_bar("BTCUSDT", 0))
    with pytest.raises(RuntimeError, match="closed"):
        pub.heartbeat({})
    kit.publisher("q")
    sub = kit.subscriber(["bar."])
    sub.close()
    sub.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sub.receive(timeout_ms=0)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_restarted_publisher_is_heard_at_once_even_when_its_first_messages_were_lost(
        tmp_path: Path, transport: str) -> None:
    """SIGKILL-and-restart in miniature: the new publisher's first messages leave before the subscriber
    reconnects (ZeroMQ drops them); its next ones must be delivered, not skipped as old seqs."""
    endpoint = "tcp://127.0.0.1:0" if transport == "tcp" else f"ipc://{tmp_path}/restart.sock"
    first = ZmqPublisher(endpoint, "svc", linger_ms=0)
    endpoint = first.endpoint
    with ZmqSubscriber([endpoint], ["bar."]) as sub:
        assert first.wait_for_subscriptions(1, 5_000)
        for i in range(40):
            first.publish(make_bar("BTCUSDT", i))
        assert len(receive_all(sub, 40)) == 40
        first.close()
        with ZmqPublisher(endpoint, "svc", linger_ms=0) as second:
            for i in range(3):
                second.publish(make_bar("BTCUSDT", 100 + i))  # nobody subscribed yet: dropped by ZeroMQ
            deadline = time.monotonic() + 5
            while not second.wait_for_subscriptions(1, 20):  # the subscriber reconnects while it is called
                assert sub.receive(timeout_ms=20) is None and time.monotonic() < deadline
            second.publish(make_bar("BTCUSDT", 103))
            got = receive_all(sub, 1, timeout_ms=3_000)
    assert [(m.seq, m.event_time) for m in got] == [(4, make_bar("BTCUSDT", 103).event_time)]
    assert sub.stats.restarts == 1 and sub.stats.duplicates == 0 and sub.stats.total_gaps == 3


def test_a_subscriber_hears_only_its_own_run_and_counts_the_others(tmp_path: Path) -> None:
    """Two runs' publishers on endpoints one subscriber reads (the old fixed-port cross-talk)."""
    mine = ZmqPublisher(f"ipc://{tmp_path}/a.sock", "trader", snapshot_endpoint=f"ipc://{tmp_path}/a-snap.sock",
                        linger_ms=0, run_id="run-a")
    theirs = ZmqPublisher(f"ipc://{tmp_path}/b.sock", "trader", snapshot_endpoint=f"ipc://{tmp_path}/b-snap.sock",
                          linger_ms=0, run_id="run-b")
    try:
        for pub in (mine, theirs):
            pub.publish(make_bar("BTCUSDT", 0 if pub is mine else 50))
        with ZmqSubscriber([mine.endpoint, theirs.endpoint], ["bar.", "heartbeat."], run_id="run-a",
                           snapshot_endpoint=[mine.snapshot_endpoint or "", theirs.snapshot_endpoint or ""]) as sub:
            assert mine.wait_for_subscriptions(2, 5_000) and theirs.wait_for_subscriptions(2, 5_000)
            assert [m.event_time for m in sub.catch_up(3_000)] == [make_bar("BTCUSDT", 0).event_time]
            for i in range(1, 6):
                theirs.publish(make_bar("BTCUSDT", 50 + i))
                theirs.heartbeat()
                mine.publish(make_bar("BTCUSDT", i))
            got = receive_all(sub, 5)
            assert sub.receive(timeout_ms=300) is None
    finally:
        mine.close()
        theirs.close()
    assert [m.event_time for m in got] == [make_bar("BTCUSDT", i).event_time for i in range(1, 6)]
    assert sub.stats.foreign == 5 + 5 + 2 and sub.last_heartbeat("trader") is None  # bars, beats, 2 snapshots
