"""Helpers shared by the bar tests: real trades as arrays and as messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dope.bars import TradeArrays
from dope.messages import Trade


def read_trades_csv(path: Path) -> pd.DataFrame:
    """A Binance spot trades CSV (with header) as a frame."""
    return pd.read_csv(path)


def arrays_of(frame: pd.DataFrame) -> TradeArrays:
    return TradeArrays.raw(
        frame["time"].to_numpy(np.int64), frame["id"].to_numpy(np.int64), frame["price"].to_numpy(np.float64),
        frame["qty"].to_numpy(np.float64), frame["is_buyer_maker"].to_numpy(bool),
    )


def messages_of(arrays: TradeArrays, symbol: str) -> list[Trade]:
    return [
        Trade(symbol=symbol, event_time=int(t), trade_id=int(i), price=float(p), qty=float(q),
              is_buyer_maker=bool(m), first_trade_id=int(f), last_trade_id=int(last))
        for t, i, p, q, m, f, last in zip(arrays.time, arrays.trade_id, arrays.price, arrays.qty,
                                          arrays.is_buyer_maker, arrays.first_trade_id, arrays.last_trade_id,
                                          strict=True)
    ]
