"""The tabular form of bars: column names (Binance's kline layout plus DOPE's) and dtypes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np
import pandas as pd

from dope.messages import Bar

BAR_DTYPES: Final[dict[str, str]] = {
    "open_time": "int64",
    "close_time": "int64",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "quote_volume": "float64",
    "count": "int64",
    "taker_buy_volume": "float64",
    "taker_buy_quote_volume": "float64",
    "vwap": "float64",
    "empty": "bool",
    "first_trade_id": "int64",
    "last_trade_id": "int64",
}
BAR_COLUMNS: Final[list[str]] = list(BAR_DTYPES)
"""Columns of a bar frame, in order (a frame also has a leading ``symbol`` column)."""


def empty_bar_frame(symbol: str = "") -> pd.DataFrame:
    """A bar frame with no rows and the right dtypes."""
    frame = pd.DataFrame({name: np.empty(0, dtype=dtype) for name, dtype in BAR_DTYPES.items()})
    frame.insert(0, "symbol", pd.Series([symbol] * 0, dtype="object"))
    return frame


def bars_to_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bars (of any symbols) as a frame with a ``symbol`` column and ``BAR_COLUMNS``."""
    rows = [(bar.symbol, *(getattr(bar, name) for name in BAR_COLUMNS)) for bar in bars]
    if not rows:
        return empty_bar_frame()
    frame = pd.DataFrame.from_records(rows, columns=["symbol", *BAR_COLUMNS])
    return frame.astype(BAR_DTYPES)


def bars_from_frame(frame: pd.DataFrame, interval_ms: int, symbol: str | None = None) -> list[Bar]:
    """Rebuild ``Bar`` messages from a frame (its ``symbol`` column, or ``symbol`` for all rows)."""
    symbols = frame["symbol"].tolist() if symbol is None else [symbol] * len(frame)
    columns = [frame[name].tolist() for name in BAR_COLUMNS]
    return [
        Bar(symbol=sym, event_time=values[1], interval_ms=interval_ms, **dict(zip(BAR_COLUMNS, values, strict=True)))
        for sym, values in zip(symbols, zip(*columns, strict=True), strict=True)
    ]
