"""Bars from real Binance data checked against independent computations.

(a) 10 s bars built from the real spot trades equal a DuckDB SQL group-by of the same CSV, and
10s -> 1m -> 15m re-aggregation equals a direct 15 m build; (b) the real 15 m klines of 9 symbols,
re-aggregated to 1 h, equal Binance's own 1 h klines over 2025.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from dope.bars import build_bars, resample_bars
from dope.store import BarStore
from dope.store.files import read_klines, read_trades
from tests.conftest import bundled_trades_file, require_shared_data, shared_data_dir

TEN_S, MINUTE, QUARTER, HOUR = 10_000, 60_000, 900_000, 3_600_000
PRICE_COLUMNS = ["open", "high", "low", "close"]
SUM_COLUMNS = ["volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT", "LINKUSDT"]
YEAR_2025 = (1735689600000, 1767225600000)

GROUP_BY_SQL = """
SELECT time // $interval * $interval AS open_time,
       arg_min(price, (time, id)) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, (time, id)) AS close,
       sum(qty) AS volume, sum(price * qty) AS quote_volume, count(*) AS count,
       coalesce(sum(qty) FILTER (WHERE NOT is_buyer_maker), 0) AS taker_buy_volume,
       coalesce(sum(price * qty) FILTER (WHERE NOT is_buyer_maker), 0) AS taker_buy_quote_volume,
       min(id) AS first_trade_id, max(id) AS last_trade_id
FROM read_csv($path, header = true, columns = {'id': 'BIGINT', 'price': 'DOUBLE', 'qty': 'DOUBLE',
     'quote_qty': 'DOUBLE', 'time': 'BIGINT', 'is_buyer_maker': 'BOOLEAN', 'is_best_match': 'BOOLEAN'})
GROUP BY ALL ORDER BY open_time
"""


def spot_trades_file(symbol: str) -> Path:
    """The real spot trades in ../shared/data, else the identical copy bundled with the package."""
    shared = sorted((shared_data_dir() / "binance" / "trades" / "spot").glob(f"{symbol}-trades-spot-*.csv.gz"))
    return shared[0] if shared else bundled_trades_file(symbol)


def assert_bars_match(got: pd.DataFrame, expected: pd.DataFrame, exact: list[str]) -> None:
    """Prices, counts and ids exactly; sums to a relative 1e-12."""
    assert got["open_time"].tolist() == expected["open_time"].tolist()
    for name in exact:
        assert got[name].tolist() == expected[name].tolist(), name
    for name in SUM_COLUMNS:
        np.testing.assert_allclose(got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-12, atol=0,
                                   err_msg=name)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_real_trades_to_bars_equal_sql_group_by(symbol: str) -> None:
    path = spot_trades_file(symbol)
    bars = build_bars(read_trades(path), symbol, TEN_S)
    expected = duckdb.execute(GROUP_BY_SQL, {"interval": TEN_S, "path": str(path)}).df()
    traded = bars[~bars["empty"]].reset_index(drop=True)
    assert_bars_match(traded, expected, [*PRICE_COLUMNS, "count", "first_trade_id", "last_trade_id"])
    windows = set(range(int(bars["open_time"].iloc[0]), int(bars["open_time"].iloc[-1]) + 1, TEN_S))
    assert set(bars.loc[bars["empty"], "open_time"]) == windows - set(expected["open_time"])
    assert len(bars) == len(windows) and int(bars["count"].sum()) == len(read_trades(path))


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_real_bars_reaggregate_10s_1m_15m_like_a_direct_build(symbol: str) -> None:
    trades = read_trades(spot_trades_file(symbol))
    chained = resample_bars(resample_bars(build_bars(trades, symbol, TEN_S), TEN_S, MINUTE), MINUTE, QUARTER)
    direct = build_bars(trades, symbol, QUARTER)
    assert len(direct) == 2  # the capture straddles 2024-08-09 00:00 UTC
    assert_bars_match(chained, direct, [*PRICE_COLUMNS, "count", "first_trade_id", "last_trade_id", "empty"])


def _year_2025(frame: pd.DataFrame) -> pd.DataFrame:
    keep = (frame["open_time"] >= YEAR_2025[0]) & (frame["open_time"] < YEAR_2025[1])
    return frame[keep].reset_index(drop=True)


@pytest.mark.shared_data
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_real_15m_klines_resample_to_binance_1h_klines(symbol: str) -> None:
    folder = require_shared_data("binance", "klines")
    quarter = read_klines(next((folder / "15m").glob(f"{symbol}-15m-*.csv.gz")))
    hour = read_klines(next((folder / "1h").glob(f"{symbol}-1h-*.csv.gz")))
    assert (quarter.interval_ms, hour.interval_ms) == (QUARTER, HOUR)
    got = resample_bars(_year_2025(quarter.frame), QUARTER, HOUR)
    expected = _year_2025(hour.frame)
    assert len(expected) == 8760
    assert_bars_match(got, expected, [*PRICE_COLUMNS, "count", "empty"])


@pytest.mark.shared_data
def test_real_klines_through_the_store(tmp_path: Path) -> None:
    path = next(require_shared_data("binance", "klines", "15m").glob("BTCUSDT-15m-*.csv.gz"))
    frame = read_klines(path).frame
    spring = frame[(frame["open_time"] >= 1743465600000) & (frame["open_time"] < 1751328000000)]  # Apr-Jun 2025
    store = BarStore(tmp_path)
    store.write_bars(spring, QUARTER)
    june = store.read_bars("BTCUSDT", QUARTER, 1748736000000, 1751328000000)
    assert len(june) == 30 * 96
    got = resample_bars(store.read_bars("BTCUSDT", QUARTER), QUARTER, HOUR)
    pd.testing.assert_frame_equal(got, resample_bars(spring.reset_index(drop=True), QUARTER, HOUR))
