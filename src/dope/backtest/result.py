"""What a backtest returns: the metrics at once; equity, position and trades when first asked for.

The vectorized kernel logs only what changes at a fill (the bar, the cash and the position
from then on), so a backtest costs one pass over the inputs; :class:`BacktestResult` turns
that log into per-bar arrays and, replaying the fills, a trades frame on first use. The
event path records the arrays as it goes and hands them over as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.metrics import bar_returns
from dope.trading.orders import TradeRecord
from dope.types import FloatArray, IntArray

#: Columns of ``BacktestResult.trades``: one row per round trip, the open position last.
#: ``direction`` 1 long / -1 short; bars are indexes into the inputs; times are the
#: open times (ms) of the fill bars (``exit_bar``/``exit_time`` -1 while open, when the
#: exit price is the last close and the exit fee 0).
TRADE_COLUMNS: Final = ("direction", "entry_bar", "exit_bar", "entry_time", "exit_time", "qty", "entry_price",
                        "exit_price", "entry_fee", "exit_fee", "pnl", "return", "is_open")

#: The trades as a structured array (the kernel's replay writes it; the frame takes its columns).
TRADE_DTYPE: Final = np.dtype([(name, np.bool_ if name == "is_open" else np.int64 if name in (
    "direction", "entry_bar", "exit_bar", "entry_time", "exit_time") else np.float64) for name in TRADE_COLUMNS])



class BarRecord(Protocol):
    """Where a result's per-bar arrays and trades come from."""

    def times(self) -> IntArray:
        """Open time of every bar (epoch ms)."""
        ...

    def equity(self) -> FloatArray:
        """Equity per bar, marked at the close."""
        ...

    def position(self) -> FloatArray:
        """Signed quantity held over each bar's close."""
        ...

    def trades(self) -> pd.DataFrame:
        """The trades frame (``TRADE_COLUMNS``)."""
        ...


@dataclass(frozen=True)
class RecordedBars:
    """Per-bar arrays and trades recorded as the bars went by (the event path)."""

    bar_times: IntArray
    equity_curve: FloatArray
    positions: FloatArray
    trade_frame: pd.DataFrame

    def times(self) -> IntArray:
        return self.bar_times

    def equity(self) -> FloatArray:
        return self.equity_curve

    def position(self) -> FloatArray:
        return self.positions

    def trades(self) -> pd.DataFrame:
        return self.trade_frame


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """The outcome of one threshold backtest.

    ``times`` are the bars' open times (epoch ms); ``equity`` is marked at each bar's
    close; ``position`` is the signed quantity held over that close. Those and ``trades``
    are built from ``record`` on first use and kept.
    """

    config: BacktestConfig
    interval_ms: int
    record: BarRecord = field(repr=False)
    fees_paid: float
    metrics: dict[str, float]

    @cached_property
    def times(self) -> IntArray:
        return self.record.times()

    @cached_property
    def equity(self) -> FloatArray:
        return self.record.equity()

    @cached_property
    def position(self) -> FloatArray:
        return self.record.position()

    @cached_property
    def trades(self) -> pd.DataFrame:
        return self.record.trades()

    def returns(self) -> FloatArray:
        """Simple return of each bar (the first against the initial cash)."""
        return bar_returns(self.equity, self.config.initial_cash)

    def frame(self) -> pd.DataFrame:
        """Equity and position per bar, indexed by open time."""
        return pd.DataFrame({"open_time": self.times, "equity": self.equity, "position": self.position})


def empty_trades() -> pd.DataFrame:
    """A trades frame with no rows and the right columns and dtypes."""
    return trades_frame(np.empty(0, dtype=TRADE_DTYPE))


def trades_frame(table: npt.NDArray[np.void]) -> pd.DataFrame:
    """The trades frame of a ``TRADE_DTYPE`` table."""
    return pd.DataFrame({name: table[name].copy() for name in TRADE_COLUMNS})


def trades_from_records(records: Sequence[TradeRecord], times: IntArray) -> pd.DataFrame:
    """The trades frame from the trader core's records (bars found from the fill times)."""
    return trades_frame(np.array([_record_row(r, times) for r in records], dtype=TRADE_DTYPE))


def _record_row(r: TradeRecord, times: IntArray) -> tuple[int | float | bool, ...]:
    entry_bar = int(np.searchsorted(times, r.entry_time))
    exit_bar = -1 if r.is_open else int(np.searchsorted(times, r.exit_time))
    return (r.direction, entry_bar, exit_bar, r.entry_time, r.exit_time, r.qty, r.entry_price, r.exit_price,
            r.entry_fee, r.exit_fee, r.pnl, r.ret, r.is_open)
