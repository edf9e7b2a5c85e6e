"""The offline path: features of whole bar frames (training, backtests), and the training target.

The frame is checked, packed into one float64 row per bar and fed through the compiled
:func:`dope.features.definitions.run`, the same step the online featurizer calls per bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from dope.features import definitions as d
from dope.features.featureset import FeatureError, FeatureSet
from dope.features.plugins import fill_plugin_features
from dope.types import FloatArray, IntArray

_INPUT_COLUMNS: Final = ("open_time", "high", "low", "close", "volume", "quote_volume", "count",
                         "taker_buy_volume", "empty")
_PRICES: Final = ("high", "low", "close")
_SIZES: Final = ("volume", "quote_volume", "count", "taker_buy_volume")


class FeatureInputError(FeatureError):
    """Bars that features cannot be computed from (NaN/inf, non-positive price, unsorted times)."""


def new_state(fs: FeatureSet) -> tuple[FloatArray, IntArray]:
    """A fresh ring (channels x 2*warmup) and integer state for one symbol."""
    channels = d.CH_CONTEXT + len(fs.context_symbols)
    ring = np.zeros((channels, 2 * fs.warmup), dtype=np.float64)
    return ring, np.zeros(d.ST_CONTEXT + len(fs.context_symbols), dtype=np.int64)


def _where(frame: pd.DataFrame, row: int, what: str) -> str:
    label = f"{frame['symbol'].iloc[0]} " if "symbol" in frame.columns and len(frame) else ""
    return f"{label}bars row {row} (open_time {int(frame['open_time'].iloc[row])}): {what}"


def _first_bad(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def check_bars(bars: pd.DataFrame, role: str = "bars") -> None:
    """Raise :class:`FeatureInputError` naming the column and row of the first unusable value."""
    missing = [c for c in _INPUT_COLUMNS if c not in bars.columns]
    if missing:
        raise FeatureInputError(f"{role} frame lacks columns {missing}")
    if "symbol" in bars.columns and bars["symbol"].nunique() > 1:
        raise FeatureInputError(f"{role} frame holds several symbols: {sorted(bars['symbol'].unique())}")
    for column in _INPUT_COLUMNS[:-1]:
        values = bars[column].to_numpy(dtype=np.float64)
        checks = [(~np.isfinite(values), "is NaN or infinite")]
        checks += [(values <= 0, "is not positive")] if column in _PRICES else []
        checks += [(values < 0, "is negative")] if column in _SIZES else []
        for mask, what in checks:
            if (row := _first_bad(mask)) is not None:
                raise FeatureInputError(_where(bars, row, f"column {column!r} {what} ({values[row]})"))
    row = _first_bad(np.diff(bars["open_time"].to_numpy()) <= 0)
    if row is not None:
        raise FeatureInputError(_where(bars, row + 1, "open_time not after the previous row's"))


def _context_closes(bars: pd.DataFrame, fs: FeatureSet,
                    context: Mapping[str, pd.DataFrame] | None) -> list[FloatArray]:
    """Each context symbol's close at every bar's open time (NaN where it has no bar)."""
    closes = []
    for symbol in fs.context_symbols:
        if context is None or symbol not in context:
            raise FeatureInputError(f"feature set {fs.name!r} needs context bars of {symbol}")
        frame = context[symbol]
        check_bars(frame, f"context {symbol}")
        aligned = pd.Series(frame["close"].to_numpy(np.float64), index=frame["open_time"].to_numpy())
        closes.append(aligned.reindex(bars["open_time"].to_numpy()).to_numpy(np.float64))
    return closes


def input_rows(bars: pd.DataFrame, fs: FeatureSet,
               context: Mapping[str, pd.DataFrame] | None = None) -> FloatArray:
    """Checked bars as the compiled step's input rows (``definitions.IN_*`` layout)."""
    check_bars(bars)
    columns = [bars[c].to_numpy(dtype=np.float64) for c in _INPUT_COLUMNS]
    return np.ascontiguousarray(np.column_stack(columns + _context_closes(bars, fs, context)))


def run_features(inputs: FloatArray, fs: FeatureSet) -> tuple[FloatArray, IntArray]:
    """Feature rows (NaN before warm-up) and step flags for every input row, from a fresh state."""
    ring, state = new_state(fs)
    out = np.full((len(inputs), len(fs.names)), np.nan)
    flags = np.zeros(len(inputs), dtype=np.int64)
    if len(inputs) and not fs.plugins:
        d.run(ring, state, fs.spec, inputs, out, flags)
    elif len(inputs):
        _run_with_plugins(inputs, fs, ring, state, out, flags)
    return out, flags


def _run_with_plugins(inputs: FloatArray, fs: FeatureSet, ring: FloatArray, state: IntArray, out: FloatArray,
                      flags: IntArray) -> None:
    """The online featurizer's per-bar sequence (compiled step, then the plugin features) over every row."""
    spec, first, warmup = fs.spec, fs.n_builtin, fs.warmup
    for i in range(len(inputs)):
        row = out[i]
        flags[i] = d.step(ring, state, spec, inputs[i], row)
        if flags[i] != d.REJECTED and flags[i] & d.READY:
            fill_plugin_features(fs.plugins, ring, state, warmup, row, first)


def compute_features(bars: pd.DataFrame, fs: FeatureSet,
                     context: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Features of a bar frame: ``open_time``, ``close_time`` and ``fs.names``, warm-up rows dropped.

    ``attrs`` holds ``gap_resets`` (rows whose open time jumped, restarting warm-up) and
    ``context_missing`` (rows where a context symbol had no bar and its last close was carried).
    """
    out, flags = run_features(input_rows(bars, fs, context), fs)
    ready = (flags & d.READY) != 0
    frame = pd.DataFrame(out[ready], columns=list(fs.names))
    frame.insert(0, "close_time", bars["close_time"].to_numpy()[ready].astype(np.int64))
    frame.insert(0, "open_time", bars["open_time"].to_numpy()[ready].astype(np.int64))
    frame.attrs["gap_resets"] = int(((flags & d.GAP) != 0).sum())
    frame.attrs["context_missing"] = int(((flags & d.CONTEXT_MISSING) != 0).sum())
    return frame


def forward_log_return(bars: pd.DataFrame, horizon: int, interval_ms: int | None = None) -> pd.Series:
    """``log(close[t + horizon] / close[t])``: the target; NaN for the last ``horizon`` rows.

    With ``interval_ms``, rows whose bar ``horizon`` rows ahead is not exactly ``horizon``
    intervals later (a gap in the data) are NaN too. Training only: this looks forward.
    """
    if horizon < 1:
        raise FeatureError(f"horizon must be >= 1 bar, got {horizon}")
    log_close = np.log(bars["close"].to_numpy(dtype=np.float64))
    target = np.full(len(bars), np.nan)
    target[:-horizon] = log_close[horizon:] - log_close[:-horizon]
    if interval_ms is not None:
        times = bars["open_time"].to_numpy(dtype=np.int64)
        target[:-horizon][times[horizon:] - times[:-horizon] != horizon * interval_ms] = np.nan
    return pd.Series(target, index=bars.index, name=f"fwd_ret_{horizon}")


def training_matrix(bars: pd.DataFrame, fs: FeatureSet, horizon: int,
                    context: Mapping[str, pd.DataFrame] | None = None) -> tuple[FloatArray, FloatArray, IntArray]:
    """``(X, y, open_times)`` for the rows that have features and a known target, in time order."""
    inputs = input_rows(bars, fs, context)
    out, flags = run_features(inputs, fs)
    target = forward_log_return(bars, horizon, fs.params.interval_ms).to_numpy()
    keep = ((flags & d.READY) != 0) & np.isfinite(target)
    times = bars["open_time"].to_numpy(dtype=np.int64)[keep]
    return np.ascontiguousarray(out[keep]), target[keep], times
