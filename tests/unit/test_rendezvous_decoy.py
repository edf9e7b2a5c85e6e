"""The decoy: feature vectors archived exactly as the models received them, idempotently, and read back."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import pytest

from dope.clock import SimulatedClock
from dope.messages import AnyMessage, Features, Score, encode
from dope.rendezvous.archive import FeatureArchive
from dope.rendezvous.records import LiveArchive
from dope.services.decoy import DecoyService
from dope.store import CorruptFileError, StoreError
from dope.transport import InMemoryBus

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400_000
T0 = 1_723_161_600_000 - 20_000  # two bars before a UTC midnight
AWKWARD = [0.1, -0.0, 5e-324, 1e308, math.pi, math.nan, -math.inf, 1 / 3]


def vector(i: int, symbol: str = "BTCUSDT", version: str = "v1") -> Features:
    return Features(symbol=symbol, event_time=T0 + i * 10_000 + 9_999, open_time=T0 + i * 10_000,
                    feature_set="default", feature_version=version,
                    values=[v * (i + 1) for v in AWKWARD], seq=i + 1, source="featurizer")


def test_archive_round_trips_bit_for_bit_across_days(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    vectors = [vector(i) for i in range(5)] + [vector(0, "ETHUSDT")]
    assert archive.write(vectors) == 6
    back = archive.read("default", "BTCUSDT")
    assert [encode(v) for v in back] == [encode(v) for v in vectors[:5]]
    days = sorted(p.parent.name for p in (tmp_path / "features" / "default" / "BTCUSDT").rglob("*.parquet"))
    assert days == ["date=2024-08-08", "date=2024-08-09"]
    assert [v.open_time for v in archive.read("default", "BTCUSDT", T0 + 20_000, T0 + 40_000)] == [
        T0 + 20_000, T0 + 30_000]
    assert [encode(v) for v in archive.read("default", "ETHUSDT")] == [encode(vectors[5])]


def test_archive_is_idempotent_keeps_each_version_and_the_last_write_of_a_key(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    archive.write([vector(i) for i in range(3)])
    files = sorted((tmp_path / "features").rglob("*.parquet"))
    stamps = [(f, f.stat().st_mtime_ns, f.read_bytes()) for f in files]
    first = [encode(v) for v in archive.read("default", "BTCUSDT")]
    assert archive.write([vector(1), vector(2)]) == 2  # the same vectors again (NaN included): a new part
    assert [(f, f.stat().st_mtime_ns, f.read_bytes()) for f in files] == stamps  # earlier parts never rewritten
    assert [encode(v) for v in archive.read("default", "BTCUSDT")] == first
    archive.write([vector(1, version="v2")])
    assert [(v.open_time, v.feature_version) for v in archive.read("default", "BTCUSDT")] == [
        (T0, "v1"), (T0 + 10_000, "v1"), (T0 + 10_000, "v2"), (T0 + 20_000, "v1")]
    republished = vector(2).__replace__(seq=99)  # a vector published again (a restarted featurizer)
    archive.write([republished])
    assert encode(archive.read("default", "BTCUSDT", T0 + 20_000)[0]) == encode(republished)


def test_a_day_written_as_one_file_by_dope_0_1_is_read_first_then_its_new_parts(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    archive.write([vector(2), vector(3)])  # one day: T0 + 20 s is midnight
    day = archive.day_folder("default", "BTCUSDT", vector(2).open_time)
    (day / "part-000001.parquet").rename(day / "features.parquet")
    archive.write([vector(3).__replace__(seq=7), vector(4)])
    assert sorted(p.name for p in day.iterdir()) == ["features.parquet", "part-000001.parquet"]
    assert [(v.open_time, v.seq) for v in archive.read("default", "BTCUSDT")] == [
        (T0 + 20_000, 3), (T0 + 30_000, 7), (T0 + 40_000, 5)]


def test_parts_are_read_in_the_order_they_were_written_past_a_million(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    archive.write([vector(2)])
    day = archive.day_folder("default", "BTCUSDT", vector(2).open_time)
    (day / "part-000001.parquet").rename(day / "part-999999.parquet")
    archive.write([vector(2).__replace__(seq=50)])
    assert sorted(p.name for p in day.iterdir()) == ["part-1000000.parquet", "part-999999.parquet"]
    assert [v.seq for v in archive.read("default", "BTCUSDT")] == [50]  # the newer part wins


def test_archive_refuses_bad_names_and_corrupt_files(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    with pytest.raises(StoreError, match="bad symbol"):
        archive.write([vector(0, symbol="../etc")])
    archive.write([vector(0)])
    path = next((tmp_path / "features").rglob("*.parquet"))
    path.write_bytes(b"not parquet")
    with pytest.raises(CorruptFileError, match=r"part-000001\.parquet"):
        archive.read("default", "BTCUSDT")


def test_decoy_service_archives_what_a_model_receives(tmp_path: Path) -> None:
    bus = InMemoryBus()
    featurizer = bus.publisher("featurizer")
    model_side = bus.subscriber(["features."])
    decoy = DecoyService("decoy", bus.publisher("decoy"), [bus.subscriber(["features."])],
                         LiveArchive(tmp_path), flush_every=4, clock=SimulatedClock(0))
    for i in range(10):
        featurizer.publish(vector(i).__replace__(seq=0, source=""))  # the bus stamps seq and source
    received = [model_side.receive(0) for _ in range(10)]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(decoy.run(stop))
        while decoy.counters["archived"] + len(decoy.pending) < 10:
            await asyncio.sleep(0.001)
        assert decoy.counters["archived"] == 8  # two batches of four; the rest waits for the stop
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    decoy.close()
    back = FeatureArchive(tmp_path).read("default", "BTCUSDT")
    assert [encode(v) for v in back] == [encode(m) for m in received if m is not None]
    assert len(back) == 10 and decoy.counters["flushes"] == 3


def test_the_decoy_writes_a_partial_batch_when_the_bus_is_quiet_or_its_first_message_waited_ten_seconds(
        tmp_path: Path) -> None:
    """Not in the middle of a burst: a bar's messages (the path of a decision) come within milliseconds,
    and a write then would compete with them for the CPU."""
    clock = SimulatedClock(0)
    decoy = DecoyService("decoy", InMemoryBus().publisher("decoy"), [], LiveArchive(tmp_path), flush_every=1_000,
                         clock=clock)
    flushes = []
    for i in range(40):  # a message every 300 ms: never a quiet second
        clock.advance_to(300 * (i + 1))
        decoy.handle(vector(i))
        decoy.on_idle()
        flushes.append(decoy.counters["flushes"])
    assert flushes.index(1) == 34 and decoy.counters["archived"] == 35  # at 10.5 s: 10 s after the first one
    clock.advance_to(12_000 + 999)
    decoy.on_idle()
    assert decoy.counters["flushes"] == 1  # quiet for 999 ms only
    clock.advance_to(13_000)
    decoy.on_idle()
    assert decoy.counters["flushes"] == 2 and decoy.counters["archived"] == 40 and not decoy.pending


def test_the_decoy_leaves_a_bars_messages_queued_until_its_burst_has_settled(tmp_path: Path) -> None:
    """Off the path: the vector that wakes the decoy waits SETTLE_MS (the decision is out by then)."""
    import threading
    import time

    from dope.services.decoy import SETTLE_MS

    bus = InMemoryBus()
    featurizer = bus.publisher("featurizer")
    handled: list[float] = []

    class Timed(DecoyService):
        def handle(self, msg: AnyMessage) -> None:
            handled.append(time.monotonic())
            super().handle(msg)

    decoy = Timed("decoy", bus.publisher("decoy"), [bus.subscriber(["features."])], LiveArchive(tmp_path),
                  flush_every=100)
    sent: list[float] = []
    stop = asyncio.Event()

    def send() -> None:
        while not decoy.started:
            time.sleep(0.001)
        time.sleep(0.05)  # the decoy waits for messages
        sent.append(time.monotonic())
        featurizer.publish(vector(0).__replace__(seq=0, source=""))
        time.sleep(0.3)
        stop.set()

    sender = threading.Thread(target=send)
    sender.start()
    asyncio.run(asyncio.wait_for(decoy.run(stop), timeout=10))
    sender.join()
    decoy.close()
    assert SETTLE_MS >= 10 and len(handled) == 1 and handled[0] - sent[0] >= (SETTLE_MS - 5) / 1000


def day_vectors(first: int, count: int) -> list[Features]:
    t0 = 1_704_067_200_000  # a UTC midnight: 8,640 bars of 10 s fit in its day file
    return [Features(symbol="BTCUSDT", event_time=t0 + i * 10_000 + 9_999, open_time=t0 + i * 10_000,
                     feature_set="default", feature_version="v1", values=[float(i + j) for j in range(21)],
                     seq=i + 1, source="featurizer") for i in range(first, first + count)]


def test_a_flush_into_a_full_day_costs_memory_for_the_batch_not_the_day(tmp_path: Path) -> None:
    """The decoy appends every batch as a part of the day: the stored rows are never read back, only the
    batch becomes Python objects (a day as dicts: ~10 MB at 8,000 rows)."""
    archive = FeatureArchive(tmp_path)
    archive.write(day_vectors(0, 8_000))
    batch = day_vectors(8_000, 100)
    tracemalloc.start()
    try:
        assert archive.write(batch) == 100
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB of Python objects for a batch of 100"
    back = archive.read("default", "BTCUSDT")
    assert [encode(v) for v in back] == [encode(v) for v in day_vectors(0, 8_100)]


CHILD = """
import dope.services  # what a service process imports first
import psutil
from dope.rendezvous.archive import FeatureArchive
from tests.unit.test_rendezvous_decoy import day_vectors
archive = FeatureArchive({root!r})
archive.write(day_vectors(0, 100))
before = psutil.Process().memory_info().rss
for k in range(1, 60):
    archive.write(day_vectors(100 * k, 100))
print(psutil.Process().memory_info().rss - before)
"""


def test_a_service_process_gives_back_the_memory_of_its_parquet_rewrites(tmp_path: Path) -> None:
    """60 flushes of 100 vectors into one day file, in a fresh process: Arrow's default allocator
    (mimalloc) kept the freed buffers (+70 to 110 MB); a service process allocates with malloc (+12 MB)."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(tmp_path))], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    grown = int(out.stdout.strip())
    assert grown < 40_000_000, f"resident memory grew {grown / 1e6:.0f} MB over 60 rewrites of a day file"


class FailingArchive(FeatureArchive):
    def write(self, vectors: Iterable[Features]) -> int:
        raise OSError(28, "No space left on device")


def test_an_unwritable_archive_keeps_the_decoys_buffer_bounded(tmp_path: Path) -> None:
    """Every flush fails (disk full): the batch is kept for the next try, but at most 100 batches wait;
    the oldest vectors beyond that are dropped, counted and logged."""
    bus = InMemoryBus()
    decoy = DecoyService("decoy", bus.publisher("decoy"), [], FailingArchive(tmp_path), flush_every=2,
                         clock=SimulatedClock(0))
    for i in range(500):
        decoy.handle(vector(i))
    assert len(decoy.pending) == 200 and decoy.pending[0].open_time == vector(300).open_time
    assert decoy.counters["dropped"] == 300 and decoy.counters["write_errors"] == 500 - 1


def test_dropping_for_a_full_disk_takes_each_vector_with_the_messages_that_came_with_it(tmp_path: Path) -> None:
    """The bound counts vectors; the scores riding along with a dropped vector go with it."""
    decoy = DecoyService("decoy", InMemoryBus().publisher("decoy"), [], FailingArchive(tmp_path), flush_every=2,
                         clock=SimulatedClock(0))
    for i in range(300):
        features = vector(i)
        decoy.handle(features)
        decoy.handle(Score(symbol="BTCUSDT", event_time=features.event_time, open_time=features.open_time,
                           model_id="rf", model_kind="random_forest", feature_version="v1", prediction=0.0,
                           latency_us=5))
    assert decoy.pending_vectors == 200 == sum(isinstance(m, Features) for m in decoy.pending)
    assert isinstance(decoy.pending[0], Features) and decoy.pending[0].open_time == vector(100).open_time  # their
    # scores went with the first 100 vectors
    assert decoy.counters["dropped"] == 200 and len(decoy.pending) == 400
