"""The collector's live path in one process: decode Binance JSON, aggregate into bars, publish on ZeroMQ.

Target (issue 2): at least 200,000 trades/s. The frames are real Binance
``@trade`` combined-stream messages (the bundled spot trades, written in the
exact wire layout and repeated with shifted ids and times to make ``--trades``).
A subscriber in another process drains the bars. The baseline, measured in the
same run, is the standard library's ``json.loads`` over the same frames (decoding
alone, no typing, no aggregation, no publishing).

    .venv/bin/python -m bench.bench_live_path [--trades 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import report
from dope.config import BarsConfig, CollectorConfig
from dope.market.binance_wire import parse_stream_frame
from dope.market.replay import bundled_trade_files
from dope.messages import Trade
from dope.services.collector import Collector
from dope.store import BarStore
from dope.transport import ZmqPublisher, ZmqSubscriber


def wire_frames(n: int) -> list[bytes]:
    """``n`` combined-stream ``@trade`` frames built from the bundled real trades."""
    trades = pd.read_csv(next(p for p in bundled_trade_files() if p.name.startswith("BTCUSDT")))
    span_ms = int(trades["time"].iloc[-1] - trades["time"].iloc[0]) + 1
    frames: list[bytes] = []
    lap = 0
    while len(frames) < n:
        for row in trades.itertuples():
            if len(frames) == n:
                break
            t = int(row.time) + lap * span_ms
            data = {"e": "trade", "E": t + 1, "s": "BTCUSDT", "t": int(row.id) + lap * len(trades),
                    "p": f"{row.price:.8f}", "q": f"{row.qty:.8f}", "T": t, "m": bool(row.is_buyer_maker),
                    "M": True}
            frames.append(json.dumps({"stream": "btcusdt@trade", "data": data}, separators=(",", ":")).encode())
        lap += 1
    return frames


def drain(endpoint: str, ready: multiprocessing.synchronize.Event) -> None:
    """Subscriber process: receive bars until the stream has been quiet for two seconds."""
    sub = ZmqSubscriber([endpoint], ["bar."])
    ready.set()
    got = 0
    while sub.receive(timeout_ms=2_000) is not None:
        got += 1
    print(f"subscriber received {got} bars, gaps {sub.stats.total_gaps}")
    sub.close()


def live_path(frames: list[bytes], publisher: ZmqPublisher, store: Path) -> Collector:
    collector = Collector(CollectorConfig(symbols=("BTCUSDT",), flush_every_bars=10**9),
                          BarsConfig(close_on="event_time"), _NoSource(), BarStore(store), publisher)
    for frame in frames:
        event = parse_stream_frame(frame)
        if isinstance(event, Trade):
            collector.ingest((event,))
    return collector


class _NoSource:
    counters: dict[str, int] = {}
    is_live = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=1_000_000)
    n = parser.parse_args().trades
    frames = wire_frames(n)
    start = time.perf_counter()
    for frame in frames:
        json.loads(frame)
    baseline = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, ZmqPublisher("tcp://127.0.0.1:*", "bench") as publisher:
        ready = multiprocessing.get_context("spawn").Event()
        reader = multiprocessing.get_context("spawn").Process(target=drain, args=(publisher.endpoint, ready))
        reader.start()
        ready.wait(30)
        publisher.wait_for_subscriptions(1, 10_000)
        start = time.perf_counter()
        collector = live_path(frames, publisher, Path(tmp))
        ours = time.perf_counter() - start
        reader.join(30)
    report("live path: decode + aggregate + publish", ours, n)
    report("baseline: json.loads alone (stdlib)", baseline, n)
    print(f"{collector.counters.bars} bars published, {publisher.stats.total_dropped} dropped")
    print(f"live path: {n / ours:,.0f} trades/s (target >= 200,000); "
          f"{baseline / ours:.2f}x the speed of json.loads alone")


if __name__ == "__main__":
    main()
