"""Benchmark of the bar store: import a year of 10 s bars for one symbol (3.15 M rows), query one day.

Baselines measured in the same run: ``pyarrow.parquet.write_table`` of the same frame to one file, and
``pd.read_parquet`` of that file plus a boolean filter. Run: ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dope.bars.schema import BAR_DTYPES
from dope.store import BarStore

INTERVAL_MS = 10_000
DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01 UTC


def random_walk_bars(days: int, seed: int = 7) -> pd.DataFrame:
    """A seeded random-walk year of 10 s bars for BTCUSDT, as a bar frame."""
    rng = np.random.default_rng(seed)
    n = days * DAY_MS // INTERVAL_MS
    open_time = START_MS + INTERVAL_MS * np.arange(n, dtype=np.int64)
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 2e-4, n)) * close
    volume = rng.gamma(2.0, 0.5, n)
    taker = volume * rng.uniform(0, 1, n)
    vwap = (open_ + close) / 2
    count = rng.poisson(30, n).astype(np.int64) + 1
    last_id = np.cumsum(count)
    frame = pd.DataFrame({
        "open_time": open_time, "close_time": open_time + INTERVAL_MS - 1, "open": open_,
        "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread, "close": close,
        "volume": volume, "quote_volume": volume * vwap, "count": count, "taker_buy_volume": taker,
        "taker_buy_quote_volume": taker * vwap, "vwap": vwap, "empty": np.zeros(n, dtype=bool),
        "first_trade_id": last_id - count + 1, "last_trade_id": last_id,
    }).astype(BAR_DTYPES)
    frame.insert(0, "symbol", "BTCUSDT")
    return frame


def timed(action: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    frame = random_walk_bars(args.days)
    day_start = START_MS + (args.days // 2) * DAY_MS
    print(f"{len(frame):,} bars of 10 s ({args.days} days), one symbol")
    with tempfile.TemporaryDirectory() as tmp:
        store, single = BarStore(Path(tmp) / "store"), Path(tmp) / "one.parquet"
        t_base_write, _ = timed(lambda: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), single))
        t_write, _ = timed(lambda: store.write_bars(frame, INTERVAL_MS))
        t_rewrite, _ = timed(lambda: store.write_bars(frame, INTERVAL_MS))
        t_base_day, base = timed(lambda: _read_filter(single, day_start), repeat=5)
        t_day, day = timed(lambda: store.read_bars("BTCUSDT", INTERVAL_MS, day_start, day_start + DAY_MS), repeat=5)
        t_all, everything = timed(lambda: store.read_bars("BTCUSDT", INTERVAL_MS))
    assert isinstance(day, pd.DataFrame) and isinstance(base, pd.DataFrame) and len(day) == len(base) == 8640
    assert isinstance(everything, pd.DataFrame) and len(everything) == len(frame)
    rows = [
        ("import (upsert, fsync, 1 file/day)", t_write, "write_table to one file", t_base_write),
        ("re-import same bars (idempotent)", t_rewrite, "write_table to one file", t_base_write),
        ("query one day (DuckDB)", t_day, "read_parquet + filter", t_base_day),
    ]
    for name, ours, base_name, theirs in rows:
        print(f"{name:38s} {ours * 1e3:9.1f} ms   {base_name:26s} {theirs * 1e3:8.1f} ms   ratio {ours / theirs:6.2f}x")
    print(f"{'read the whole year':38s} {t_all * 1e3:9.1f} ms   ({len(frame) / t_all / 1e6:.1f} M rows/s)")


def _read_filter(path: Path, day_start: int) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    keep = (frame["open_time"] >= day_start) & (frame["open_time"] < day_start + DAY_MS)
    return frame[keep]


if __name__ == "__main__":
    main()
