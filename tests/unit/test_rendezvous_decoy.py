"""The decoy: feature vectors archived exactly as the models received them, idempotently, and read back."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from dope.clock import SimulatedClock
from dope.messages import Features, encode
from dope.rendezvous.archive import FeatureArchive
from dope.rendezvous.records import LiveArchive
from dope.services.decoy import DecoyService
from dope.store import CorruptFileError, StoreError
from dope.transport import InMemoryBus

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


def test_archive_is_idempotent_and_keeps_each_version(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    archive.write([vector(i) for i in range(3)])
    files = sorted((tmp_path / "features").rglob("*.parquet"))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert archive.write([vector(1), vector(2)]) == 0  # the same vectors again (NaN included): no rewrite
    assert [f.stat().st_mtime_ns for f in files] == stamps
    archive.write([vector(1, version="v2")])
    assert [(v.open_time, v.feature_version) for v in archive.read("default", "BTCUSDT")] == [
        (T0, "v1"), (T0 + 10_000, "v1"), (T0 + 10_000, "v2"), (T0 + 20_000, "v1")]


def test_archive_refuses_bad_names_and_corrupt_files(tmp_path: Path) -> None:
    archive = FeatureArchive(tmp_path)
    with pytest.raises(StoreError, match="bad symbol"):
        archive.write([vector(0, symbol="../etc")])
    archive.write([vector(0)])
    path = next((tmp_path / "features").rglob("*.parquet"))
    path.write_bytes(b"not parquet")
    with pytest.raises(CorruptFileError, match="features.parquet"):
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
