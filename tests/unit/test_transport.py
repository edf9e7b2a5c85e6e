"""The bus's shared bookkeeping (rings, sequences, heartbeats, frame checks), snapshot protocol and set-up."""

from __future__ import annotations

import threading

import msgspec
import pytest
import zmq

import dope.transport as transport
from dope.config import BusConfig, ConfigError, config_from_dict
from dope.messages import Heartbeat, encode
from dope.transport import (
    BusError,
    FrameHeader,
    InMemoryBus,
    Snapshot,
    SnapshotProtocolError,
    TopicRing,
    ZmqPublisher,
    check_endpoint,
    open_publisher,
    open_subscriber,
)
from dope.transport.base import Intake, SequenceTracker, SubscriberStats
from dope.transport.snapshot import parse_reply, parse_request, reply_frames, request_frames
from tests.integration.test_bus_behaviour import make_bar, make_trade


def stamped(seq: int, i: int | None = None, symbol: str = "BTCUSDT", source: str = "p", *, run: str = "",
            incarnation: int = 1) -> list[bytes]:
    bar = msgspec.structs.replace(make_bar(symbol, seq if i is None else i), seq=seq, source=source)
    return [f"bar.{symbol}".encode(), FrameHeader(run, incarnation).encode(), encode(bar)]


def test_exports_are_exactly_the_public_api() -> None:
    assert sorted(transport.__all__) == transport.__all__
    for name in transport.__all__:
        assert getattr(transport, name).__module__.startswith("dope.transport")


def test_ring_keeps_the_last_n_of_kept_kinds_per_topic() -> None:
    ring = TopicRing(depth=3)
    for seq in range(1, 6):
        ring.record("bar.A", seq, b"a%d" % seq)
        ring.record("trade.A", seq, b"t%d" % seq)
    ring.record("bar.B", 1, b"b1")
    snap = ring.snapshot("bar.", "pub")
    assert snap == Snapshot("pub", [("bar.A", b"a3"), ("bar.A", b"a4"), ("bar.A", b"a5"), ("bar.B", b"b1")],
                            {"bar.A": 5, "bar.B": 1})
    assert ring.snapshot("trade.", "pub").entries == []
    assert not TopicRing(depth=0).keeps("bar.A")
    with pytest.raises(ValueError, match="depth"):
        TopicRing(depth=-1)


def test_sequence_tracker_counts_gaps_duplicates_and_restarts() -> None:
    stats = SubscriberStats()
    seqs = SequenceTracker(stats)
    key = ("p", "bar.A")
    assert [seqs.observe(key, s) for s in (5, 6, 9, 9, 7, 10)] == [True, True, True, False, False, True]
    assert stats.gaps == {key: 2} and stats.duplicates == 2
    assert seqs.observe(key, 1) and stats.restarts == 1 and seqs.last(key) == 1
    seqs.prime(key, 4)
    assert not seqs.observe(key, 3) and seqs.observe(key, 5) and stats.gaps == {key: 2}
    assert seqs.observe(("q", "bar.A"), 100)  # another source: its own stream


def test_intake_splices_a_snapshot_without_gap_or_duplicate() -> None:
    intake = Intake()
    assert intake.accept(stamped(2)) is not None
    snapshot = Snapshot("p", [("bar.BTCUSDT", stamped(s)[2]) for s in (1, 2, 3, 4)], {"bar.BTCUSDT": 4},
                        FrameHeader("", 1))
    assert [m.seq for m in intake.splice(snapshot)] == [3, 4]
    assert intake.accept(stamped(4)) is None and intake.stats.duplicates == 1
    assert intake.accept(stamped(5)) is not None
    assert intake.stats.total_gaps == 0 and intake.stats.snapshot_messages == 2


def test_intake_counts_the_hole_between_what_it_saw_and_the_snapshot() -> None:
    intake = Intake()
    intake.accept(stamped(1))
    snapshot = Snapshot("p", [("bar.BTCUSDT", stamped(s)[2]) for s in (5, 6)], {"bar.BTCUSDT": 6},
                        FrameHeader("", 1))
    assert [m.seq for m in intake.splice(snapshot)] == [5, 6]
    assert intake.stats.gaps == {("p", "bar.BTCUSDT"): 3}


def test_a_new_incarnation_starts_the_source_streams_over_even_without_seq_1() -> None:
    """A restarted publisher whose first messages were lost (slow joiner) is heard at once, not
    after its seq passes the old one (the cause of a restarted service's 35-70 s of silence)."""
    intake = Intake()
    assert all(intake.accept(stamped(s, incarnation=7)) is not None for s in range(1, 41))
    assert intake.accept(stamped(3, incarnation=8)) is not None  # seq 1 and 2 of the new life were lost
    assert intake.stats.restarts == 1 and intake.stats.duplicates == 0
    assert intake.stats.gaps == {("p", "bar.BTCUSDT"): 2}  # and they are counted, not lost silently
    assert intake.accept(stamped(4, incarnation=8)) is not None and intake.accept(stamped(4, incarnation=8)) is None
    assert intake.stats.duplicates == 1 and intake.stats.as_counters()["bus.restarts"] == 1


def test_messages_and_snapshots_of_another_run_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    intake = Intake(run_id="run-a")
    assert intake.accept(stamped(1, run="run-b")) is None
    assert intake.accept(stamped(1, run="")) is None  # a publisher outside any run
    assert intake.accept(stamped(1, run="run-a")) is not None
    foreign = Snapshot("p", [("bar.BTCUSDT", stamped(2)[2])], {"bar.BTCUSDT": 2}, FrameHeader("run-b", 1))
    assert intake.splice(foreign) == []
    assert intake.stats.foreign == 3 and intake.stats.as_counters()["bus.foreign"] == 3
    assert intake.stats.received == 1 and intake.stats.total_rejected == 0
    assert "run 'run-b' (this is run 'run-a')" in caplog.text
    anyone = Intake()  # no run id: a tool outside `dope up` hears every run
    assert anyone.accept(stamped(1, run="run-b")) is not None and anyone.stats.foreign == 0


def test_heartbeats_keep_the_latest_event_time() -> None:
    intake = Intake()
    for seq, t in ((1, 3_000), (2, 1_000)):
        beat = Heartbeat(symbol="*", event_time=t, service="p", interval_ms=1_000, seq=seq, source="p")
        intake.accept([b"heartbeat.*", FrameHeader("", 1).encode(), encode(beat)])
    assert intake.heartbeats.last("p") == 3_000
    assert intake.heartbeats.dead(now_ms=6_001, timeout_ms=3_000) == ["p"]


def test_snapshot_protocol_round_trips_and_refuses_bad_frames() -> None:
    assert parse_request(request_frames(7, "bar.")) == (7, "bar.")
    snap = Snapshot("p", [("bar.A", b"x"), ("bar.B", b"y")], {"bar.A": 3, "bar.B": 9}, FrameHeader("run-1", 42))
    assert parse_reply(reply_frames(7, snap)) == (7, snap)
    for bad in ([b"HELLO"], [b"DOPE-SNAP1", b"short", b"bar."], [b"DOPE-SNAP1", b"\0" * 8, b"\xff"]):
        with pytest.raises(SnapshotProtocolError):
            parse_request(bad)
    for bad in ([b"DOPE-SNAP1"], [b"DOPE-SNAP1", b"\xc1", b"t", b"b"], [b"DOPE-SNAP1", reply_frames(1, snap)[1], b"t"]):
        with pytest.raises(SnapshotProtocolError):
            parse_reply(bad)


def test_snapshot_server_ignores_bad_requests_and_keeps_serving() -> None:
    with ZmqPublisher("tcp://127.0.0.1:0", "p", snapshot_endpoint="tcp://127.0.0.1:0", snapshot_depth=2,
                      linger_ms=0) as pub:
        pub.publish(make_bar("BTCUSDT", 0))
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(pub.snapshot_endpoint or "")
        dealer.send_multipart([b"nonsense"])
        dealer.send_multipart(request_frames(1, "bar."))
        assert dealer.poll(5_000)
        request_id, snap = parse_reply(dealer.recv_multipart())
        assert request_id == 1 and snap.seqs == {"bar.BTCUSDT": 1} and len(snap.entries) == 1
        dealer.close()
        ctx.term()


def test_endpoints_are_checked_and_port_zero_means_any() -> None:
    assert check_endpoint("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"
    assert check_endpoint("ipc:///tmp/x.sock") == "ipc:///tmp/x.sock"
    with pytest.raises(BusError, match="must start with"):
        check_endpoint("http://127.0.0.1:5555")


def test_a_busy_endpoint_is_a_clear_error() -> None:
    with ZmqPublisher("tcp://127.0.0.1:*", "a", linger_ms=0) as first:
        with pytest.raises(BusError, match="cannot bind bus endpoint"):
            ZmqPublisher(first.endpoint, "b", linger_ms=0)
        with pytest.raises(BusError, match="cannot bind snapshot endpoint"):
            ZmqPublisher("tcp://127.0.0.1:*", "c", snapshot_endpoint=first.endpoint, linger_ms=0)


def test_bus_config_is_validated() -> None:
    assert BusConfig(snapshot="").snapshot == ""
    for bad in ({"publish": "localhost:5555"}, {"send_hwm": -1}, {"heartbeat_ms": 0}, {"snapshot": "udp://x"}):
        with pytest.raises(ConfigError, match="bus"):
            config_from_dict({"bus": bad})


def test_factories_open_a_working_pair_from_config() -> None:
    config = BusConfig(publish="tcp://127.0.0.1:0", snapshot="tcp://127.0.0.1:0", linger_ms=0, snapshot_bars=4)
    with open_publisher(config, "collector") as pub:
        for i in range(6):
            pub.publish(make_bar("BTCUSDT", i))
        assert pub.snapshot_endpoint is not None
        with open_subscriber(config, ["bar."], endpoints=[pub.endpoint],
                             snapshot_endpoints=[pub.snapshot_endpoint]) as sub:
            assert [m.seq for m in sub.catch_up(timeout_ms=5_000)] == [3, 4, 5, 6]


def test_catch_up_gives_up_after_its_timeout_when_no_one_answers(caplog: pytest.LogCaptureFixture) -> None:
    config = BusConfig(publish="tcp://127.0.0.1:1", snapshot="tcp://127.0.0.1:1")
    with open_subscriber(config, ["bar."]) as sub:
        assert sub.catch_up(timeout_ms=50) == []
    assert "no snapshot" in caplog.text


def test_memory_bus_unsubscribe_unbounded_queue_and_threads() -> None:
    bus = InMemoryBus(hwm=0)
    sub = bus.subscriber(["bar.", "trade."])
    pub = bus.publisher("p")
    sub.unsubscribe("trade.")
    for i in range(5_000):
        assert pub.publish(make_bar("BTCUSDT", i))
    assert pub.publish(make_trade("BTCUSDT", 0))
    assert sub.stats.received == 0 and len(bus.snapshots("bar.")) == 1
    got = [sub.receive(timeout_ms=0) for _ in range(5_001)]
    assert got[-1] is None and all(m is not None for m in got[:-1])
    later = threading.Timer(0.05, lambda: pub.publish(make_bar("ETHUSDT", 0)))
    later.start()
    msg = sub.receive(timeout_ms=5_000)  # wakes up when another thread publishes
    later.join()
    assert msg is not None and msg.symbol == "ETHUSDT"
    pub.close()
    assert bus.snapshots("bar.") == []


def test_one_wait_covers_subscribers_of_one_kind_only() -> None:
    first, second = InMemoryBus(), InMemoryBus()
    with pytest.raises(BusError, match="one in-memory bus"):
        transport.any_waiter([first.subscriber(["bar."]), second.subscriber(["bar."])])
    with ZmqPublisher("tcp://127.0.0.1:*", "p") as pub, transport.ZmqSubscriber([pub.endpoint], ["bar."]) as sub:
        with pytest.raises(BusError, match="InMemorySubscriber, ZmqSubscriber"):
            transport.any_waiter([sub, first.subscriber(["bar."])])
        wait = transport.any_waiter([sub])
        assert pub.wait_for_subscriptions(1, 5_000)
        assert not wait(10)
        pub.publish(make_bar("BTCUSDT", 1))
        assert wait(5_000) and sub.receive(0) is not None
