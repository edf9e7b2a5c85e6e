"""The feature definitions: pure functions over a bar history, and the one step that runs them.

Everything here is compiled by numba and is the *only* implementation of the features: the
online featurizer calls :func:`step` once per bar, the offline path calls :func:`run` (a compiled
loop over :func:`step`), so both evaluate the same machine code on the same numbers in the same order.

History lives in a ring of ``warmup`` slots per channel, written twice (at ``pos`` and
``pos + warmup``) so that ``ring[c, pos:pos + warmup]`` is always the chronological window, newest
last, without copying. Each feature is a pure function of such windows; sums run oldest to newest,
so a feature depends only on the last ``warmup`` bars, never on where the ring happens to start.

The version of a feature set hashes this file's source, so any change here changes every version.
"""

from __future__ import annotations

import math
from typing import Final

import numba
import numpy as np

from dope.types import DAY_MS, FloatArray, IntArray

# ---- input row layout (one float64 row per bar; open_time < 2**53 is exact in a float64) --------
IN_OPEN_TIME: Final = 0
IN_HIGH: Final = 1
IN_LOW: Final = 2
IN_CLOSE: Final = 3
IN_VOLUME: Final = 4
IN_QUOTE: Final = 5
IN_COUNT: Final = 6
IN_TAKER: Final = 7
IN_EMPTY: Final = 8
IN_CONTEXT: Final = 9
"""Context closes follow, one per context symbol; NaN means that symbol has no bar at this open_time."""

# ---- ring channels ------------------------------------------------------------------------------
CH_LOG_CLOSE: Final = 0
CH_CLOSE: Final = 1
CH_RANGE: Final = 2
CH_LOG_VOLUME: Final = 3
CH_LOG_COUNT: Final = 4
CH_VOLUME: Final = 5
CH_QUOTE: Final = 6
CH_TAKER: Final = 7
CH_RETURN: Final = 8
CH_CONTEXT: Final = 9

# ---- integer state ------------------------------------------------------------------------------
ST_POS: Final = 0
ST_FILLED: Final = 1
ST_LAST_OPEN: Final = 2
ST_CONTEXT: Final = 3
"""Per context symbol: bars since its first bar after the last reset (carried values included)."""

# ---- spec: parameters packed into one int64 array ----------------------------------------------
SP_INTERVAL: Final = 0
SP_WARMUP: Final = 1
SP_TIME_OF_DAY: Final = 2
SP_N_CONTEXT: Final = 3
SP_SECTIONS: Final = 4
N_SECTIONS: Final = 8
"""Then 8 section lengths, then the sections' values, in this order: return lags, volatility
windows, range windows, z-score windows, flow windows, moving-average windows, RSI windows,
context lags."""

# ---- step outcome flags -------------------------------------------------------------------------
REJECTED: Final = -1
READY: Final = 1
GAP: Final = 2
CONTEXT_MISSING: Final = 4


_jit = numba.njit(cache=True, nogil=True)


# ---- pure feature functions over chronological windows (newest last) ---------------------------

@_jit  # type: ignore[misc]
def log_return(log_close: FloatArray, lag: int) -> float:  # pragma: no cover - compiled
    """``log(close[t] / close[t - lag])``."""
    return float(log_close[-1] - log_close[-1 - lag])


@_jit  # type: ignore[misc]
def window_sum(values: FloatArray, window: int) -> float:  # pragma: no cover - compiled
    """Sum of the last ``window`` values, oldest to newest."""
    n = len(values)
    total = 0.0
    for i in range(n - window, n):
        total += values[i]
    return total


@_jit  # type: ignore[misc]
def window_mean(values: FloatArray, window: int) -> float:  # pragma: no cover - compiled
    """Mean of the last ``window`` values, summed oldest to newest."""
    return float(window_sum(values, window) / window)


@_jit  # type: ignore[misc]
def window_mean_std(values: FloatArray, window: int) -> tuple[float, float]:  # pragma: no cover - compiled
    """Mean and sample standard deviation (ddof 1) of the last ``window`` values, in two passes."""
    n = len(values)
    mean = window_mean(values, window)
    acc = 0.0
    for i in range(n - window, n):
        d = values[i] - mean
        acc += d * d
    return mean, math.sqrt(acc / (window - 1))


@_jit  # type: ignore[misc]
def zscore(values: FloatArray, window: int) -> float:  # pragma: no cover - compiled
    """``(x[t] - mean) / std`` over the last ``window`` values (current included); 0 when flat."""
    mean, sd = window_mean_std(values, window)
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return 0.0
    return float((values[-1] - mean) / sd)


@_jit  # type: ignore[misc]
def flow(taker: FloatArray, quote: FloatArray, volume: FloatArray, log_close: FloatArray,
         window: int) -> tuple[float, float]:  # pragma: no cover - compiled
    """Over the last ``window`` bars: taker-buy share of the volume minus 0.5, and
    ``log(close / VWAP)``; both 0 without volume."""
    total = window_sum(volume, window)
    if total <= 0.0:
        return 0.0, 0.0
    vwap = window_sum(quote, window) / total
    return window_sum(taker, window) / total - 0.5, float(log_close[-1] - math.log(vwap))


@_jit  # type: ignore[misc]
def ma_distance(log_close: FloatArray, close: FloatArray, window: int) -> float:  # pragma: no cover - compiled
    """``log(close / SMA(close, window))``."""
    return float(log_close[-1] - math.log(window_mean(close, window)))


@_jit  # type: ignore[misc]
def rsi(returns: FloatArray, window: int) -> float:  # pragma: no cover - compiled
    """Cutler's RSI rescaled to [-1, 1]: ``(up - down) / (up + down)`` of one-bar log returns; 0 if flat."""
    n = len(returns)
    up = 0.0
    down = 0.0
    for i in range(n - window, n):
        r = returns[i]
        if r > 0.0:
            up += r
        else:
            down -= r
    if up + down <= 0.0:
        return 0.0
    return (up - down) / (up + down)


@_jit  # type: ignore[misc]
def time_of_day(open_time: int) -> tuple[float, float]:  # pragma: no cover - compiled
    """``(sin, cos)`` of the bar's open time's position in the UTC day."""
    phase = 2.0 * math.pi * (open_time % DAY_MS) / DAY_MS
    return math.sin(phase), math.cos(phase)


# ---- the state machine ----------------------------------------------------------------------

@_jit  # type: ignore[misc]
def section(spec: IntArray, k: int) -> IntArray:  # pragma: no cover - compiled
    """The values of section ``k`` of the spec."""
    start = SP_SECTIONS + N_SECTIONS
    for j in range(k):
        start += spec[SP_SECTIONS + j]
    return spec[start:start + spec[SP_SECTIONS + k]]


@_jit  # type: ignore[misc]
def valid_input(x: FloatArray) -> bool:  # pragma: no cover - compiled
    """Finite fields, positive prices, non-negative sizes (context closes: NaN or positive)."""
    for i in range(IN_CONTEXT):
        if not math.isfinite(x[i]):
            return False
    if x[IN_HIGH] <= 0.0 or x[IN_LOW] <= 0.0 or x[IN_CLOSE] <= 0.0:
        return False
    if x[IN_VOLUME] < 0.0 or x[IN_QUOTE] < 0.0 or x[IN_COUNT] < 0.0 or x[IN_TAKER] < 0.0:
        return False
    ok = True
    for i in range(IN_CONTEXT, len(x)):
        ok = ok and (math.isnan(x[i]) or (math.isfinite(x[i]) and x[i] > 0.0))
    return ok


@_jit  # type: ignore[misc]
def push(ring: FloatArray, state: IntArray, channel: int, value: float) -> None:  # pragma: no cover - compiled
    """Write ``value`` as the newest slot of ``channel`` (both copies)."""
    warmup = ring.shape[1] // 2
    pos = state[ST_POS]
    ring[channel, pos] = value
    ring[channel, pos + warmup] = value


@_jit  # type: ignore[misc]
def newest(ring: FloatArray, state: IntArray, channel: int) -> float:  # pragma: no cover - compiled
    """The newest value written to ``channel`` (before this bar's push)."""
    warmup = ring.shape[1] // 2
    return float(ring[channel, state[ST_POS] + warmup - 1])


@_jit  # type: ignore[misc]
def push_bar(ring: FloatArray, state: IntArray, x: FloatArray) -> None:  # pragma: no cover - compiled
    """Write one bar; an empty bar carries the previous close (returns 0, range 0, sizes 0)."""
    close, high, low = x[IN_CLOSE], x[IN_HIGH], x[IN_LOW]
    volume, quote, count, taker = x[IN_VOLUME], x[IN_QUOTE], x[IN_COUNT], x[IN_TAKER]
    if x[IN_EMPTY] != 0.0:
        if state[ST_FILLED] > 0:
            close = newest(ring, state, CH_CLOSE)
        high, low, volume, quote, count, taker = close, close, 0.0, 0.0, 0.0, 0.0
    log_close = math.log(close)
    previous = newest(ring, state, CH_LOG_CLOSE) if state[ST_FILLED] > 0 else log_close
    push(ring, state, CH_RETURN, log_close - previous)
    push(ring, state, CH_LOG_CLOSE, log_close)
    push(ring, state, CH_CLOSE, close)
    push(ring, state, CH_RANGE, (high - low) / close)
    push(ring, state, CH_LOG_VOLUME, math.log1p(volume))
    push(ring, state, CH_LOG_COUNT, math.log1p(count))
    push(ring, state, CH_VOLUME, volume)
    push(ring, state, CH_QUOTE, quote)
    push(ring, state, CH_TAKER, taker)


@_jit  # type: ignore[misc]
def push_context(ring: FloatArray, state: IntArray, x: FloatArray) -> int:  # pragma: no cover - compiled
    """Write each context symbol's log close, carrying the last one when its bar is missing."""
    flags = 0
    for j in range(len(x) - IN_CONTEXT):
        value = x[IN_CONTEXT + j]
        seen = state[ST_CONTEXT + j] > 0
        if math.isnan(value):
            flags = CONTEXT_MISSING
            value = newest(ring, state, CH_CONTEXT + j) if seen else math.nan
        else:
            value = math.log(value)
        if seen or not math.isnan(value):
            state[ST_CONTEXT + j] += 1
        push(ring, state, CH_CONTEXT + j, value)
    return flags


@_jit  # type: ignore[misc]
def reset(state: IntArray) -> None:  # pragma: no cover - compiled
    """Forget the history: warm-up starts again."""
    state[ST_POS] = 0
    state[ST_FILLED] = 0
    state[ST_CONTEXT:] = 0


@_jit  # type: ignore[misc]
def is_ready(state: IntArray, warmup: int) -> bool:  # pragma: no cover - compiled
    """Every window full, for the bar and for each context symbol."""
    least = state[ST_FILLED]
    for i in range(ST_CONTEXT, len(state)):
        least = min(least, state[i])
    return bool(least >= warmup)


@_jit  # type: ignore[misc]
def step(ring: FloatArray, state: IntArray, spec: IntArray, x: FloatArray, out: FloatArray) -> int:  # pragma: no cover - compiled
    """Feed one bar (input row ``x``); fill ``out`` and return flags with ``READY`` once warm.

    A bar whose open time is not the previous one plus the interval resets the history first
    (``GAP``). Invalid input returns ``REJECTED`` and leaves the state as it was.
    """
    if not valid_input(x):
        return REJECTED
    open_time = np.int64(x[IN_OPEN_TIME])
    flags = 0
    if state[ST_FILLED] > 0 and open_time != state[ST_LAST_OPEN] + spec[SP_INTERVAL]:
        reset(state)
        flags |= GAP
    flags |= push_context(ring, state, x)
    push_bar(ring, state, x)
    warmup = spec[SP_WARMUP]
    state[ST_POS] = (state[ST_POS] + 1) % warmup
    state[ST_FILLED] = min(state[ST_FILLED] + 1, warmup)
    state[ST_LAST_OPEN] = open_time
    if is_ready(state, warmup):
        fill_features(ring, state[ST_POS], spec, int(open_time), out)
        flags |= READY
    return flags


@_jit  # type: ignore[misc]
def fill_features(ring: FloatArray, pos: int, spec: IntArray, open_time: int, out: FloatArray) -> None:  # pragma: no cover
    """Evaluate every feature on the chronological windows, in the order of the feature names."""
    w = ring[:, pos:pos + spec[SP_WARMUP]]
    k = fill_price_features(w, spec, out, 0)
    k = fill_flow_features(w, spec, out, k)
    if spec[SP_TIME_OF_DAY] != 0:
        out[k], out[k + 1] = time_of_day(open_time)
        k += 2
    fill_context_features(w, spec, out, k)


@_jit  # type: ignore[misc]
def fill_price_features(w: FloatArray, spec: IntArray, out: FloatArray, k: int) -> int:  # pragma: no cover - compiled
    """Returns, volatility, range, moving-average distance and RSI."""
    for lag in section(spec, 0):
        out[k] = log_return(w[CH_LOG_CLOSE], lag)
        k += 1
    for n in section(spec, 1):
        out[k] = window_mean_std(w[CH_RETURN], n)[1]
        k += 1
    for n in section(spec, 2):
        out[k] = window_mean(w[CH_RANGE], n)
        k += 1
    for n in section(spec, 5):
        out[k] = ma_distance(w[CH_LOG_CLOSE], w[CH_CLOSE], n)
        k += 1
    for n in section(spec, 6):
        out[k] = rsi(w[CH_RETURN], n)
        k += 1
    return k


@_jit  # type: ignore[misc]
def fill_flow_features(w: FloatArray, spec: IntArray, out: FloatArray, k: int) -> int:  # pragma: no cover - compiled
    """Volume and trade-count z-scores, taker-buy imbalance and VWAP distance."""
    for n in section(spec, 3):
        out[k] = zscore(w[CH_LOG_VOLUME], n)
        out[k + 1] = zscore(w[CH_LOG_COUNT], n)
        k += 2
    for n in section(spec, 4):
        out[k], out[k + 1] = flow(w[CH_TAKER], w[CH_QUOTE], w[CH_VOLUME], w[CH_LOG_CLOSE], n)
        k += 2
    return k


@_jit  # type: ignore[misc]
def fill_context_features(w: FloatArray, spec: IntArray, out: FloatArray, k: int) -> int:  # pragma: no cover - compiled
    """Each context symbol's log returns over the context lags."""
    for j in range(spec[SP_N_CONTEXT]):
        for lag in section(spec, 7):
            out[k] = log_return(w[CH_CONTEXT + j], lag)
            k += 1
    return k


@_jit  # type: ignore[misc]
def run(ring: FloatArray, state: IntArray, spec: IntArray, inputs: FloatArray, out: FloatArray, flags: IntArray) -> None:  # pragma: no cover
    """The offline path: :func:`step` over every input row, outputs and flags per row."""
    for i in range(inputs.shape[0]):
        flags[i] = step(ring, state, spec, inputs[i], out[i])
