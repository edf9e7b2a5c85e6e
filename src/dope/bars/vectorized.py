"""Vectorized (bulk) trade -> bar aggregation: one compiled pass over sorted trade arrays.

It gives the same bars as :class:`dope.bars.BarBuilder` fed the same trades in
``(time, trade id)`` order: the same windows, the same empty bars, and sums
accumulated in the same order, so even the floating-point volumes are equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.bars.interval import align, check_interval_ms
from dope.bars.schema import BAR_DTYPES, empty_bar_frame
from dope.types import FloatArray, IntArray

BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TradeArrays:
    """Trades of one symbol as parallel arrays (times in epoch ms, UTC).

    ``first_trade_id``/``last_trade_id`` give the raw trade-id range of each
    row (equal to ``trade_id`` for raw trades; wider for aggregate trades).
    """

    time: IntArray
    trade_id: IntArray
    price: FloatArray
    qty: FloatArray
    is_buyer_maker: BOOL
    first_trade_id: IntArray
    last_trade_id: IntArray

    @classmethod
    def raw(cls, time: IntArray, trade_id: IntArray, price: FloatArray, qty: FloatArray, is_buyer_maker: BOOL) -> TradeArrays:
        """Arrays of raw trades (each row one exchange trade)."""
        return cls(time, trade_id, price, qty, is_buyer_maker, trade_id, trade_id)

    def __len__(self) -> int:
        return len(self.time)

    def sorted(self) -> TradeArrays:
        """The same trades ordered by ``(time, trade_id)`` (returns self if already so)."""
        if _is_time_id_sorted(self.time, self.trade_id):
            return self
        order = np.lexsort((self.trade_id, self.time))
        return TradeArrays(*(np.ascontiguousarray(a[order]) for a in self._columns()))

    def _columns(self) -> tuple[npt.NDArray[np.generic], ...]:
        return (self.time, self.trade_id, self.price, self.qty, self.is_buyer_maker,
                self.first_trade_id, self.last_trade_id)


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _is_time_id_sorted(time: IntArray, trade_id: IntArray) -> bool:  # pragma: no cover - compiled
    for k in range(1, len(time)):
        if time[k] < time[k - 1] or (time[k] == time[k - 1] and trade_id[k] < trade_id[k - 1]):
            return False
    return True


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _aggregate(time: IntArray, price: FloatArray, qty: FloatArray, maker: BOOL, first_id: IntArray, last_id: IntArray,
               interval: int, start_open: int, floats: FloatArray, ints: IntArray) -> None:  # pragma: no cover - compiled
    """Fill ``floats`` (open, high, low, close, volume, quote, taker base, taker quote) and
    ``ints`` (trades, count, first id, last id) per window, summing in trade order.

    Trades are sorted by time, so the window changes only at a boundary: the
    running values live in locals and are written out once per window."""
    n = len(time)
    k = 0
    while k < n:
        b = (time[k] - time[k] % interval - start_open) // interval
        edge = start_open + (b + 1) * interval
        p = price[k]
        o = p
        h = p
        lo = p
        vol = 0.0
        quote = 0.0
        tvol = 0.0
        tquote = 0.0
        trades = 0
        count = 0
        fid = first_id[k]
        lid = last_id[k]
        while k < n and time[k] < edge:
            p = price[k]
            q = qty[k]
            pq = p * q
            h = max(h, p)
            lo = min(lo, p)
            vol += q
            quote += pq
            if not maker[k]:
                tvol += q
                tquote += pq
            trades += 1
            count += last_id[k] - first_id[k] + 1
            fid = min(fid, first_id[k])
            lid = max(lid, last_id[k])
            k += 1
        floats[b, 0] = o
        floats[b, 1] = h
        floats[b, 2] = lo
        floats[b, 3] = p
        floats[b, 4] = vol
        floats[b, 5] = quote
        floats[b, 6] = tvol
        floats[b, 7] = tquote
        ints[b, 0] = trades
        ints[b, 1] = count
        ints[b, 2] = fid
        ints[b, 3] = lid


def build_bars(
    trades: TradeArrays,
    symbol: str,
    interval_ms: int,
    *,
    start_open_time: int | None = None,
    prev_close: float | None = None,
    emit_empty: bool = True,
) -> pd.DataFrame:
    """Aggregate trades into bars, one row per window from the first to the last trade's.

    With ``start_open_time`` (and the ``prev_close`` that empty bars carry) the
    bars start there instead, as a collector resuming after a restart does.
    """
    check_interval_ms(interval_ms)
    trades = trades.sorted()
    if len(trades) == 0:
        return empty_bar_frame(symbol)
    first_open = align(int(trades.time[0]), interval_ms) if start_open_time is None else start_open_time
    n_bars = (align(int(trades.time[-1]), interval_ms) - first_open) // interval_ms + 1
    if int(trades.time[0]) < first_open:
        raise ValueError(f"trades start at {int(trades.time[0])}, before start_open_time {first_open}")
    floats = np.zeros((n_bars, 8), dtype=np.float64)
    ints = np.zeros((n_bars, 4), dtype=np.int64)
    _aggregate(trades.time, trades.price, trades.qty, trades.is_buyer_maker, trades.first_trade_id,
               trades.last_trade_id, interval_ms, first_open, floats, ints)
    frame = _frame(symbol, interval_ms, first_open, floats, ints)
    frame = _carry_prices(frame, prev_close)
    return frame if emit_empty else frame[~frame["empty"]].reset_index(drop=True)


def _frame(symbol: str, interval_ms: int, first_open: int, floats: FloatArray, ints: IntArray) -> pd.DataFrame:
    open_time = first_open + interval_ms * np.arange(len(floats), dtype=np.int64)
    volume, quote = floats[:, 4], floats[:, 5]
    empty = ints[:, 0] == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(volume > 0, quote / np.where(volume > 0, volume, 1.0), floats[:, 3])
    columns = {
        "open_time": open_time, "close_time": open_time + interval_ms - 1,
        "open": floats[:, 0], "high": floats[:, 1], "low": floats[:, 2], "close": floats[:, 3],
        "volume": volume, "quote_volume": quote, "count": ints[:, 1],
        "taker_buy_volume": floats[:, 6], "taker_buy_quote_volume": floats[:, 7], "vwap": vwap,
        "empty": empty, "first_trade_id": np.where(empty, -1, ints[:, 2]),
        "last_trade_id": np.where(empty, -1, ints[:, 3]),
    }
    frame = pd.DataFrame(columns).astype(BAR_DTYPES)
    frame.insert(0, "symbol", symbol)
    return frame


def _carry_prices(frame: pd.DataFrame, prev_close: float | None) -> pd.DataFrame:
    """Give empty bars the previous close; drop leading empties when nothing is known before them."""
    empty = frame["empty"].to_numpy()
    if not empty.any():
        return frame
    close = frame["close"].where(~frame["empty"]).ffill()
    if prev_close is not None:
        close = close.fillna(prev_close)
    for name in ("open", "high", "low", "close", "vwap"):
        frame.loc[empty, name] = close[empty]
    return frame[close.notna().to_numpy()].reset_index(drop=True)
