"""Why restarted services go unheard (found by the chaos run): a subscriber drops a restarted publisher's
messages as duplicates until their sequence numbers pass the old process's, whenever the new process's
first message (seq 1) went out before the subscriber had reconnected (a ZeroMQ slow joiner)."""

from __future__ import annotations

import pytest

from dope.messages import Bar
from dope.transport import ZmqPublisher, ZmqSubscriber
from tests.trader_helpers import INTERVAL, START, make_bar


def receive_bars(sub: ZmqSubscriber, count: int) -> list[Bar]:
    out: list[Bar] = []
    for _ in range(count * 10):
        msg = sub.receive(50)
        if isinstance(msg, Bar):
            out.append(msg)
            if len(out) == count:
                break
    return out


@pytest.mark.slow
def test_a_restarted_publisher_is_heard_even_when_its_first_message_was_missed() -> None:
    first = ZmqPublisher("tcp://127.0.0.1:0", "collector", linger_ms=0)
    endpoint = first.endpoint
    sub = ZmqSubscriber([endpoint], ["bar."])
    try:
        assert first.wait_for_subscriptions(1, timeout_ms=5_000)
        for i in range(30):
            first.publish(make_bar(START + i * INTERVAL, 100.0, 100.0))
        assert len(receive_bars(sub, 30)) == 30
        first.close()
        restarted = ZmqPublisher(endpoint, "collector", linger_ms=0)  # the same service, a new process
        try:
            restarted.publish(make_bar(START + 30 * INTERVAL, 100.0, 100.0))  # seq 1: nobody connected yet
            got = []
            for _ in range(100):  # the subscriber reconnects while it is being read
                msg = sub.receive(50)
                got += [msg] if isinstance(msg, Bar) else []
                if restarted.wait_for_subscriptions(1, timeout_ms=1):
                    break
            for i in range(31, 35):
                restarted.publish(make_bar(START + i * INTERVAL, 100.0, 100.0))  # seq 2..5
            got += receive_bars(sub, 4)
            duplicates = sub.stats.duplicates
        finally:
            restarted.close()
    finally:
        sub.close()
    assert [b.open_time for b in got] == [START + i * INTERVAL for i in range(31, 35)], \
        f"{duplicates} messages of the restarted publisher dropped as duplicates"
