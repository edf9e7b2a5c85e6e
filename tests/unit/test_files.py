"""Readers of Binance public data files: layouts, compressions, headers, µs times, bad rows."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dope.store.files import (
    BadRowError,
    FileFormatError,
    ReadStats,
    detect_file,
    iter_trades,
    read_klines,
    read_trades,
)
from tests.conftest import bundled_trades_file

SPOT_TRADES = ["1,100.5,2.0,201.0,1735689600000,True,True", "2,101.0,1.0,101.0,1735689601000,False,True",
               "3,99.5,0.5,49.75,1735689612000,False,True"]
FUT_AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
FUT_AGG = ["10,100.0,1.5,100,102,1723161256322,False", "11,100.5,0.5,103,103,1723161256400,True"]
KLINES_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                 "taker_buy_quote_volume,ignore")
KLINES = ["1735689600000,10.0,12.0,9.0,11.0,4.0,1735690499999,42.0,7,1.0,10.5,0",
          "1735690500000,11.0,11.0,11.0,11.0,0.0,1735691399999,0.0,0,0.0,0.0,0"]


def write(path: Path, lines: list[str]) -> Path:
    """Write CSV lines as plain text, gzip or a zip holding one CSV, by the suffix of ``path``."""
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(path.with_suffix(".csv").name, data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".zip"])
def test_spot_trades_without_header_any_compression(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"BTCUSDT-trades-2025-01-01{suffix}", SPOT_TRADES)
    info = detect_file(path)
    assert (info.layout, info.market, info.header, info.symbol) == ("trades", "spot", False, "BTCUSDT")
    trades = read_trades(path)
    assert trades.trade_id.tolist() == [1, 2, 3]
    assert trades.price.tolist() == [100.5, 101.0, 99.5]
    assert trades.is_buyer_maker.tolist() == [True, False, False]
    assert trades.first_trade_id.tolist() == trades.last_trade_id.tolist() == [1, 2, 3]


def test_microsecond_times_become_ms(tmp_path: Path) -> None:
    micros = [line.replace("1735689600000", "1735689600000123").replace("1735689601000", "1735689601000999")
              for line in SPOT_TRADES]
    trades = read_trades(write(tmp_path / "BTCUSDT-trades-2025-01-01.csv", micros))
    assert trades.time.tolist() == [1735689600000, 1735689601000, 1735689612000]


def test_futures_aggtrades_with_header_keep_id_ranges(tmp_path: Path) -> None:
    path = write(tmp_path / "ETHUSDT-aggTrades-2024-08-08.csv", [FUT_AGG_HEADER, *FUT_AGG])
    info = detect_file(path)
    assert (info.layout, info.market, info.header) == ("aggTrades", "futures", True)
    trades = read_trades(path)
    assert trades.trade_id.tolist() == [10, 11]
    assert trades.first_trade_id.tolist() == [100, 103] and trades.last_trade_id.tolist() == [102, 103]


@pytest.mark.parametrize(("lines", "layout", "market"), [
    (SPOT_TRADES, "trades", "spot"),
    (["1,100.5,2.0,201.0,1735689600000,True"], "trades", "futures"),
    (["0,0.2,50.0,0,0,1608872400000,False,True"], "aggTrades", "spot"),
    (FUT_AGG, "aggTrades", "futures"),
    (KLINES, "klines", "any"),
])
def test_layout_from_content_alone(tmp_path: Path, lines: list[str], layout: str, market: str) -> None:
    info = detect_file(write(tmp_path / "data.csv", lines))
    assert (info.layout, info.market, info.symbol) == (layout, market, None)


def test_name_and_content_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv", SPOT_TRADES)
    with pytest.raises(FileFormatError, match="file name says aggTrades but the content has the trades layout"):
        detect_file(path)


def test_klines_become_bars(tmp_path: Path) -> None:
    klines = read_klines(write(tmp_path / "BTCUSDT-15m-2025-01.csv.gz", [KLINES_HEADER, *KLINES]))
    assert klines.interval_ms == 900_000
    frame = klines.frame
    assert frame["symbol"].tolist() == ["BTCUSDT", "BTCUSDT"]
    assert frame["empty"].tolist() == [False, True]
    assert frame["vwap"].tolist() == [10.5, 11.0]
    assert frame["count"].tolist() == [7, 0]
    assert frame["first_trade_id"].tolist() == [-1, -1]
    assert (frame["close_time"] - frame["open_time"]).tolist() == [899_999, 899_999]


def test_kline_interval_from_times_when_not_named(tmp_path: Path) -> None:
    klines = read_klines(write(tmp_path / "data.csv", KLINES), symbol="XRPUSDT")
    assert klines.interval_ms == 900_000 and klines.frame["symbol"].iloc[0] == "XRPUSDT"
    with pytest.raises(FileFormatError, match="no symbol"):
        read_klines(tmp_path / "data.csv")


@pytest.mark.parametrize(("bad_line", "message"), [
    ("2,nan,1.0,101.0,1735689601000,False,True", "line 2: missing or NaN price"),
    ("2,-5,1.0,101.0,1735689601000,False,True", "line 2: not a positive number price"),
    ("2,0,1.0,101.0,1735689601000,False,True", "line 2: not a positive number price"),
    ("2,abc,1.0,101.0,1735689601000,False,True", "line 2: non-numeric price"),
    ("2,101.0,-1.0,101.0,1735689601000,False,True", "line 2: negative or infinite qty"),
    ("2,101.0,1.0,101.0,1735689601000,maybe,True", "line 2: not a boolean"),
    ("2,101.0", "line 2: missing"),
    ("2,101.0,1.0,101.0,1735689601000,False,True,7,8", "line 2, saw 9"),
])
def test_bad_rows_name_file_line_and_problem(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path / "BTCUSDT-trades-2025-01-01.csv", [SPOT_TRADES[0], bad_line, SPOT_TRADES[2]])
    with pytest.raises(BadRowError, match=message) as caught:
        read_trades(path)
    assert str(path) in str(caught.value)


def test_bad_rows_can_be_skipped_and_counted(tmp_path: Path) -> None:
    lines = [SPOT_TRADES[0], "2,nan,1.0,101.0,1735689601000,False,True", "x,y", SPOT_TRADES[2],
             "4,1.0,1.0,1.0,1,True,True,9,9"]
    stats = ReadStats()
    trades = read_trades(write(tmp_path / "BTCUSDT-trades-2025-01-01.csv", lines), on_bad="skip", stats=stats)
    assert trades.trade_id.tolist() == [1, 3]
    assert stats.rows == 2 and stats.skipped == 3
    assert any("line 2" in p for p in stats.problems)


def test_bad_kline_rows(tmp_path: Path) -> None:
    misaligned = KLINES[1].replace("1735690500000", "1735690500001", 1)
    path = write(tmp_path / "BTCUSDT-15m-2025-01.csv", [KLINES[0], misaligned])
    with pytest.raises(BadRowError, match="line 2: open_time not a multiple of 900000"):
        read_klines(path)
    path = write(tmp_path / "BTCUSDT-15m-2025-02.csv", [KLINES_HEADER, KLINES[0].replace(",12.0,", ",8.0,")])
    with pytest.raises(BadRowError, match="line 2: high below another price"):
        read_klines(path)
    stats = ReadStats()
    assert len(read_klines(path, on_bad="skip", stats=stats).frame) == 0 and stats.skipped == 1


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="no such file"):
        detect_file(tmp_path / "missing.csv")
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(FileFormatError, match="unreadable archive"):
        detect_file(tmp_path / "broken.csv.gz")
    with pytest.raises(FileFormatError, match="5 columns"):
        detect_file(write(tmp_path / "odd.csv", ["1,2,3,4,5"]))


def test_chunks_cover_the_real_file(tmp_path: Path) -> None:
    path = bundled_trades_file("ETHUSDT")
    whole = read_trades(path)
    parts = list(iter_trades(path, chunk_rows=4_000))
    assert [len(p) for p in parts] == [4_000, 4_000, 4_000, 2_515]
    assert np.array_equal(np.concatenate([p.trade_id for p in parts]), whole.trade_id)
    assert np.all(np.diff(whole.trade_id) == 1)  # the real file has no gaps
