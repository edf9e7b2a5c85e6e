"""Re-aggregation of bars into any whole multiple of their interval (10s -> 1m -> 15m, 15m -> 1h)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dope.bars.interval import check_interval_ms
from dope.bars.schema import BAR_DTYPES, empty_bar_frame


def resample_bars(bars: pd.DataFrame, from_interval_ms: int, to_interval_ms: int) -> pd.DataFrame:
    """Combine bars of one symbol into bars ``to_interval_ms`` long (a multiple of ``from_interval_ms``).

    Prices come from the non-empty bars only (open of the first, close of the
    last, extreme highs and lows); sums add up; a window whose bars are all
    empty stays an empty bar carrying the price. A window with no input bar at
    all (a gap in the data) produces no row: gaps stay visible.
    """
    check_interval_ms(to_interval_ms)
    if to_interval_ms % from_interval_ms:
        raise ValueError(f"{to_interval_ms} ms is not a multiple of {from_interval_ms} ms")
    if bars.empty:
        return empty_bar_frame()
    bars = bars.sort_values("open_time", kind="stable")
    key = bars["open_time"].to_numpy() // to_interval_ms * to_interval_ms
    traded = bars[~bars["empty"].to_numpy()]
    traded_key = key[~bars["empty"].to_numpy()]
    out = _sums(bars, key).join(_prices(traded, traded_key), how="left")
    out = _fill_empty_windows(out, bars, key)
    out["close_time"] = out.index.to_numpy() + to_interval_ms - 1
    out["open_time"] = out.index.to_numpy()
    out.insert(0, "symbol", bars["symbol"].iloc[0] if "symbol" in bars else "")
    return out.reset_index(drop=True)[["symbol", *BAR_DTYPES]].astype(BAR_DTYPES)


def _sums(bars: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    columns = ["volume", "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume"]
    grouped = bars[columns].groupby(key, sort=True)
    out = grouped.sum()
    out["empty"] = bars["empty"].groupby(key, sort=True).all()
    return out


def _prices(traded: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    grouped = traded.groupby(key, sort=True)
    return pd.DataFrame({
        "open": grouped["open"].first(), "high": grouped["high"].max(), "low": grouped["low"].min(),
        "close": grouped["close"].last(), "first_trade_id": grouped["first_trade_id"].min(),
        "last_trade_id": grouped["last_trade_id"].max(),
    })


def _fill_empty_windows(out: pd.DataFrame, bars: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    """All-empty windows carry the last bar's (carried) close; volume-weighted price from sums."""
    carried = bars["close"].groupby(key, sort=True).last()
    for name in ("open", "high", "low", "close"):
        out[name] = out[name].fillna(carried)
    out["first_trade_id"] = out["first_trade_id"].fillna(-1)
    out["last_trade_id"] = out["last_trade_id"].fillna(-1)
    volume = out["volume"].to_numpy()
    safe_volume = np.where(volume > 0, volume, 1.0)
    out["vwap"] = np.where(volume > 0, out["quote_volume"].to_numpy() / safe_volume, out["close"].to_numpy())
    return out
