"""The ZeroMQ bus between processes: a publisher in a child process, the test subscribes.

Run as ``python -m tests.integration.test_bus_process NAME DEPTH`` this file is
the child: a publisher driven by one-line commands on stdin, answering one
JSON line per command on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dope.clock import SimulatedClock
from dope.messages import Bar, Heartbeat
from dope.transport import ZmqPublisher, ZmqSubscriber
from tests.integration.test_bus_behaviour import make_bar, receive_all

REPO_ROOT = Path(__file__).resolve().parents[2]


class RemotePublisher:
    """Drives the child publisher process."""

    def __init__(self, name: str, depth: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.test_bus_process", name, str(depth)],
                                     cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.endpoints = self._reply()

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"publisher process ended (rc={self.proc.poll()})"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def remote() -> Iterator[RemotePublisher]:
    pub = RemotePublisher("collector", depth=20)
    yield pub
    pub.stop()


def subscriber_of(remote: RemotePublisher, topics: list[str]) -> ZmqSubscriber:
    sub = ZmqSubscriber([remote.endpoints["endpoint"]], topics, snapshot_endpoint=remote.endpoints["snapshot"])
    assert remote.command(f"wait {len(topics)}")["ok"]
    return sub


def test_bars_from_another_process_arrive_in_order_without_gaps(remote: RemotePublisher) -> None:
    with subscriber_of(remote, ["bar.", "heartbeat."]) as sub:
        assert remote.command("bars BTCUSDT 0 300") == {"sent": 300, "dropped": 0}
        assert remote.command("bars ETHUSDT 0 300") == {"sent": 600, "dropped": 0}
        remote.command("heartbeat 5000")
        got = receive_all(sub, 601)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            bars = [m for m in got if isinstance(m, Bar) and m.symbol == symbol]
            assert [m.seq for m in bars] == list(range(1, 301))
            assert bars[-1] == msgspec.structs.replace(make_bar(symbol, 299), seq=300, source="collector")
        assert isinstance(got[-1], Heartbeat) and got[-1].counters["bus.sent"] == 600
        assert sub.stats.total_gaps == 0 and sub.stats.total_rejected == 0


def test_late_joiner_gets_recent_bars_then_the_live_stream(remote: RemotePublisher) -> None:
    remote.command("bars BTCUSDT 0 50")
    with subscriber_of(remote, ["bar."]) as sub:
        recent = sub.catch_up(timeout_ms=5_000)
        assert [m.seq for m in recent] == list(range(31, 51))
        remote.command("bars BTCUSDT 50 10")
        assert [m.seq for m in receive_all(sub, 10)] == list(range(51, 61))
        assert sub.stats.total_gaps == 0 and sub.stats.duplicates == 0


def test_a_killed_publisher_is_noticed_by_its_missing_heartbeats(remote: RemotePublisher) -> None:
    with subscriber_of(remote, ["heartbeat."]) as sub:
        remote.command("heartbeat 5000")
        assert isinstance(sub.receive(timeout_ms=5_000), Heartbeat)
        remote.stop()
        assert sub.receive(timeout_ms=200) is None
        assert sub.last_heartbeat("collector") == 5000
        assert sub.dead_publishers(now_ms=7_000, timeout_ms=3_000) == []
        assert sub.dead_publishers(now_ms=8_001, timeout_ms=3_000) == ["collector"]


def _serve(pub: ZmqPublisher, clock: SimulatedClock) -> None:
    for line in sys.stdin:
        cmd, *args = line.split()
        reply: dict[str, Any] = {}
        if cmd == "wait":
            reply = {"ok": pub.wait_for_subscriptions(int(args[0]), timeout_ms=10_000)}
        elif cmd == "bars":
            for i in range(int(args[1]), int(args[1]) + int(args[2])):
                pub.publish(make_bar(args[0], i))
            reply = {"sent": pub.stats.total_sent, "dropped": pub.stats.total_dropped}
        elif cmd == "heartbeat":
            clock.advance_to(int(args[0]))
            pub.heartbeat({})
        print(json.dumps(reply), flush=True)


def main(name: str, depth: int) -> None:
    clock = SimulatedClock(0)
    with ZmqPublisher("tcp://127.0.0.1:0", name, snapshot_endpoint="tcp://127.0.0.1:0", snapshot_depth=depth,
                      clock=clock, linger_ms=1_000) as pub:
        print(json.dumps({"endpoint": pub.endpoint, "snapshot": pub.snapshot_endpoint}), flush=True)
        _serve(pub, clock)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
