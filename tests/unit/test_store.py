"""BarStore: layout, upsert, idempotency, ranges, atomicity, corrupt files and bad frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope.bars import TradeArrays, build_bars, resample_bars
from dope.store import BarStore, CorruptFileError, StoreError
from dope.store.files import read_trades
from tests.conftest import bundled_trades_file

DAY = 86_400_000
TEN_S = 10_000


def _bars(symbol: str, start_ms: int, n: int, seed: int = 1, interval_ms: int = TEN_S) -> pd.DataFrame:
    """``n`` bars of a seeded random walk, one trade per bar."""
    rng = np.random.default_rng(seed)
    time = start_ms + interval_ms * np.arange(n, dtype=np.int64)
    price = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    trades = TradeArrays.raw(time, np.arange(n, dtype=np.int64), price, rng.uniform(0.1, 2.0, n),
                             rng.random(n) < 0.5)
    return build_bars(trades, symbol, interval_ms)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("bars.parquet"))}


def test_layout_is_interval_symbol_date(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    bars = _bars("BTCUSDT", DAY - 30_000, 6)  # three bars on each side of a UTC midnight
    assert store.write_bars(bars, TEN_S) == 6
    assert sorted(_files(tmp_path)) == [
        "bars/interval=10s/symbol=BTCUSDT/date=1970-01-01/bars.parquet",
        "bars/interval=10s/symbol=BTCUSDT/date=1970-01-02/bars.parquet",
    ]
    assert store.symbols(TEN_S) == ["BTCUSDT"]
    assert store.intervals() == [TEN_S]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    trades = read_trades(bundled_trades_file("BTCUSDT"))
    bars = build_bars(trades, "BTCUSDT", TEN_S)
    store.write_bars(bars, TEN_S)
    pd.testing.assert_frame_equal(store.read_bars("BTCUSDT", TEN_S), bars)


def test_write_twice_leaves_identical_files(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    bars = pd.concat([_bars("BTCUSDT", 0, 9000), _bars("ETHUSDT", 0, 9000, seed=2)], ignore_index=True)
    store.write_bars(bars, TEN_S)
    before = _files(tmp_path)
    mtimes = [p.stat().st_mtime_ns for p in tmp_path.rglob("bars.parquet")]
    store.write_bars(bars.sample(frac=1.0, random_state=3), TEN_S)  # same rows, any order
    assert _files(tmp_path) == before
    assert [p.stat().st_mtime_ns for p in tmp_path.rglob("bars.parquet")] == mtimes  # not even rewritten


def test_upsert_new_rows_win_and_merge(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    old = _bars("BTCUSDT", 0, 10)
    store.write_bars(old, TEN_S)
    new = _bars("BTCUSDT", 50_000, 10, seed=9)  # overlaps the last 5 bars, adds 5
    store.write_bars(new, TEN_S)
    got = store.read_bars("BTCUSDT", TEN_S)
    assert got["open_time"].tolist() == list(range(0, 150_000, TEN_S))
    pd.testing.assert_frame_equal(got.iloc[:5].reset_index(drop=True), old.iloc[:5].reset_index(drop=True))
    pd.testing.assert_frame_equal(got.iloc[5:].reset_index(drop=True), new)


def test_duplicates_within_a_frame_keep_the_last(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    first, second = _bars("BTCUSDT", 0, 3), _bars("BTCUSDT", 0, 3, seed=5)
    store.write_bars(pd.concat([first, second], ignore_index=True), TEN_S)
    pd.testing.assert_frame_equal(store.read_bars("BTCUSDT", TEN_S), second)


def test_read_ranges_are_half_open_and_cross_days(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    bars = _bars("BTCUSDT", DAY - 50_000, 10)
    store.write_bars(bars, TEN_S)
    got = store.read_bars("BTCUSDT", TEN_S, DAY - 20_000, DAY + 20_000)
    assert got["open_time"].tolist() == [DAY - 20_000, DAY - 10_000, DAY, DAY + 10_000]
    assert store.read_bars("BTCUSDT", TEN_S, start_ms=DAY + 40_000)["open_time"].tolist() == [DAY + 40_000]
    assert store.read_bars("BTCUSDT", TEN_S, end_ms=DAY - 40_000)["open_time"].tolist() == [DAY - 50_000]
    assert store.read_bars("BTCUSDT", TEN_S, 5 * DAY, 6 * DAY).empty
    assert store.read_bars("ETHUSDT", TEN_S).empty


def test_last_bar_and_resample_of_read(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    bars = _bars("BTCUSDT", DAY - 60_000, 18)
    store.write_bars(bars, TEN_S)
    last = store.last_bar("BTCUSDT", TEN_S)
    assert last is not None
    assert last["symbol"] == "BTCUSDT" and last["open_time"] == bars["open_time"].iloc[-1]
    assert last["close"] == bars["close"].iloc[-1]
    assert store.last_bar("BTCUSDT", 60_000) is None
    minute = resample_bars(store.read_bars("BTCUSDT", TEN_S), TEN_S, 60_000)
    pd.testing.assert_frame_equal(minute, resample_bars(bars, TEN_S, 60_000))


def test_query_view_spans_symbols_and_intervals(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    assert store.query("SELECT count(*) AS n FROM bars")["n"].tolist() == [0]
    store.write_bars(_bars("BTCUSDT", 0, 7), TEN_S)
    store.write_bars(_bars("ETHUSDT", 0, 5, seed=2), TEN_S)
    store.write_bars(_bars("ETHUSDT", 0, 4, seed=3, interval_ms=60_000), 60_000)
    got = store.query("SELECT symbol, interval_ms, count(*) AS n FROM bars GROUP BY ALL ORDER BY ALL")
    assert got.values.tolist() == [["BTCUSDT", 10_000, 7], ["ETHUSDT", 10_000, 5], ["ETHUSDT", 60_000, 4]]
    assert store.intervals() == [10_000, 60_000]


def test_corrupt_parquet_is_named(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    store.write_bars(_bars("BTCUSDT", DAY - 30_000, 6), TEN_S)
    victim = store.day_file("BTCUSDT", TEN_S, pd.Timestamp("1970-01-02").date())
    victim.write_bytes(victim.read_bytes()[:40])
    for action in (lambda: store.read_bars("BTCUSDT", TEN_S), lambda: store.last_bar("BTCUSDT", TEN_S),
                   lambda: store.query("SELECT * FROM bars"), lambda: store.write_bars(_bars("BTCUSDT", DAY, 2),
                                                                                         TEN_S)):
        with pytest.raises(CorruptFileError, match=str(victim)):
            action()
    assert store.read_bars("BTCUSDT", TEN_S, end_ms=DAY)["open_time"].size == 3  # the other day still reads


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BarStore(tmp_path)
    bars = _bars("BTCUSDT", 0, 5)
    store.write_bars(bars, TEN_S)
    before = _files(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        store.write_bars(_bars("BTCUSDT", 0, 5, seed=4), TEN_S)
    assert _files(tmp_path) == before
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f.drop(columns=["vwap"]), "lacks column"),
    (lambda f: f.assign(close=np.where(f.index == 2, np.nan, f["close"])), "NaN"),
    (lambda f: f.assign(low=-f["low"]), "not positive"),
    (lambda f: f.assign(open_time=f["open_time"] + 1, close_time=f["close_time"] + 1), "not a multiple"),
    (lambda f: f.assign(close_time=f["close_time"] + 5), "close_time"),
    (lambda f: f.assign(volume=-1.0), "negative"),
    (lambda f: f.assign(symbol="../evil"), "bad symbol"),
    (lambda f: f.assign(count="many"), "wrong type"),
])
def test_bad_frames_are_refused_with_the_reason(tmp_path: Path, mutate: object, message: str) -> None:
    store = BarStore(tmp_path)
    bad = mutate(_bars("BTCUSDT", 0, 5))  # type: ignore[operator]
    with pytest.raises(StoreError, match=message):
        store.write_bars(bad, TEN_S)
    assert _files(tmp_path) == {}


def test_bad_interval_and_symbol_names(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        store.write_bars(_bars("BTCUSDT", 0, 2), 500)
    with pytest.raises(StoreError, match="bad symbol"):
        store.read_bars("a/b", TEN_S)
