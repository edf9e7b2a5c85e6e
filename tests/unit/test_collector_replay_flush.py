"""A full-speed replay writes the store in few large batches (a write costs tens of ms whatever its size)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dope.config import config_from_dict
from dope.services.collector import Collector
from dope.services.sources import open_source
from dope.store import BarStore


def test_a_full_speed_replay_makes_few_store_writes_and_stores_every_bar(tmp_path: Path) -> None:
    config = config_from_dict({"bars": {"interval": "1s"}, "collector": {"flush_every_bars": 50}})
    source, clock = open_source(config)
    store = BarStore(tmp_path)
    collector = Collector(config.collector, config.bars, source, store, None, clock=clock)
    counters = asyncio.run(collector.run())
    assert counters.bars == 1_302
    assert counters.flushes <= 5  # one a second at most; 26 when every 50 bars were written
    assert sum(len(store.read_bars(s, 1_000)) for s in config.collector.symbols) == 1_302
