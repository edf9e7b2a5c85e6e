"""Bus throughput: Bar messages over tcp to a subscriber in another process, against raw ZeroMQ.

The baseline sends the same frames (topic, frame header, the same msgpack bytes) with a raw
XPUB socket to a raw SUB socket in another process, in the same run. The bus
adds stamping (seq, source), encoding, the snapshot ring, decoding and the
checks at the subscriber. Throughput is counted at the subscriber, from the
first message published to the last one received.

    .venv/bin/python -m bench.bench_bus [--messages 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import msgspec
import zmq

from dope.messages import Bar, encode
from dope.transport import FrameHeader, ZmqPublisher, ZmqSubscriber

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")
IDLE_MS = 2_000


def make_bars(n: int, interval_ms: int = 10_000) -> list[Bar]:
    """``n`` plausible bars, round-robin over four symbols."""
    bars = []
    for i in range(n):
        open_time = 1_723_161_600_000 + (i // len(SYMBOLS)) * interval_ms
        price = 60_000.0 + (i % 997) * 0.37
        bars.append(Bar(symbol=SYMBOLS[i % len(SYMBOLS)], event_time=open_time + interval_ms - 1,
                        interval_ms=interval_ms, open_time=open_time, close_time=open_time + interval_ms - 1,
                        open=price, high=price + 12.5, low=price - 7.25, close=price + 1.5, volume=3.25 + i % 7,
                        quote_volume=(3.25 + i % 7) * price, count=40 + i % 13, taker_buy_volume=1.5,
                        taker_buy_quote_volume=1.5 * price, vwap=price + 0.5, empty=False,
                        first_trade_id=1_000_000 + 50 * i, last_trade_id=1_000_049 + 50 * i))
    return bars


def bus_subscriber(endpoint: str, count: int, out: Connection) -> None:
    """Child: receive ``count`` bars through the bus; send (received, time of last, gaps)."""
    with ZmqSubscriber([endpoint], ["bar."], receive_hwm=0) as sub:
        out.send("ready")
        received, last = 0, 0.0
        while received < count and sub.receive(timeout_ms=IDLE_MS) is not None:
            received, last = received + 1, time.monotonic()
        out.send((received, last, sub.stats.total_gaps))


def raw_subscriber(endpoint: str, count: int, out: Connection) -> None:
    """Child: receive ``count`` raw three-frame messages; send (received, time of last, 0)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = 0
    sock.rcvtimeo = IDLE_MS
    sock.connect(endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, b"bar.")
    out.send("ready")
    received, last = 0, 0.0
    with contextlib.suppress(zmq.Again):
        while received < count:
            sock.recv_multipart()
            received, last = received + 1, time.monotonic()
    out.send((received, last, 0))
    sock.close()
    ctx.term()


def start_child(target: Callable[[str, int, Connection], None], endpoint: str, count: int) -> tuple[mp.process.BaseProcess, Connection]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(endpoint, count, child))
    proc.start()
    assert parent.recv() == "ready"
    return proc, parent


def run_bus(bars: list[Bar]) -> tuple[float, float, int]:
    """(publish seconds, end-to-end seconds, drops + gaps) through ZmqPublisher -> ZmqSubscriber."""
    with ZmqPublisher("tcp://127.0.0.1:*", "bench", send_hwm=0, snapshot_endpoint="tcp://127.0.0.1:*",
                      snapshot_depth=360, linger_ms=1_000) as pub:
        proc, conn = start_child(bus_subscriber, pub.endpoint, len(bars))
        assert pub.wait_for_subscriptions(1, timeout_ms=10_000)
        start = time.monotonic()
        for bar in bars:
            pub.publish(bar)
        published = time.monotonic() - start
        received, last, gaps = conn.recv()
        proc.join()
    assert received == len(bars), f"bus: received {received} of {len(bars)}"
    return published, last - start, pub.stats.total_dropped + gaps


def run_raw(frames: list[list[bytes]]) -> tuple[float, float]:
    """(publish seconds, end-to-end seconds) of the same frames over raw sockets."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.sndhwm = 0
    sock.linger = 1_000
    sock.bind("tcp://127.0.0.1:*")
    proc, conn = start_child(raw_subscriber, sock.getsockopt_string(zmq.LAST_ENDPOINT), len(frames))
    assert sock.poll(10_000) and sock.recv()[:1] == b"\x01"
    start = time.monotonic()
    for parts in frames:
        sock.send_multipart(parts)
    published = time.monotonic() - start
    received, last, _ = conn.recv()
    proc.join()
    sock.close()
    ctx.term()
    assert received == len(frames), f"raw: received {received} of {len(frames)}"
    return published, last - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    bars = make_bars(args.messages)
    header = FrameHeader("", 1).encode()
    frames = [[f"bar.{b.symbol}".encode(), header, encode(msgspec.structs.replace(b, seq=i + 1, source="bench"))]
              for i, b in enumerate(bars)]
    size = sum(sum(map(len, f)) for f in frames) / len(frames)
    raw_pub, raw_e2e = run_raw(frames)
    bus_pub, bus_e2e, lost = run_bus(bars)
    n = len(bars)
    print(f"{n} Bar messages, {size:.0f} bytes each (topic, header, body), tcp loopback, subscriber in another process")
    for name, pub_s, e2e_s in (("raw zmq XPUB->SUB (baseline)", raw_pub, raw_e2e), ("dope bus", bus_pub, bus_e2e)):
        print(f"{name:<30} publish {n / pub_s / 1e3:8.1f} k msg/s   end-to-end {n / e2e_s / 1e3:8.1f} k msg/s")
    print(f"ratio bus/raw: publish {raw_pub / bus_pub:.2f}   end-to-end {raw_e2e / bus_e2e:.2f}   (lost: {lost})")


if __name__ == "__main__":
    main()
