"""The synthetic market: seeded bars in bulk (:func:`generate_bars`) and a live trade source
(:class:`SyntheticSource`), both drawn from the one model in :mod:`dope.market.synthetic_model`.

>>> frames = generate_bars(["BTCUSDT"], 1_704_067_200_000, 1_704_067_260_000, seed=7)
>>> len(frames["BTCUSDT"]), list(frames["BTCUSDT"].columns)[:3]
(6, ['symbol', 'open_time', 'close_time'])
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from dope.bars.interval import align, check_interval_ms
from dope.bars.resample import resample_bars
from dope.bars.schema import BAR_DTYPES
from dope.errors import UserError
from dope.market.config import SyntheticConfig, SyntheticRegime
from dope.market.synthetic_model import BARS, STEP_MS, Steps, stream
from dope.market.synthetic_params import SymbolParams, SyntheticParams, load_params
from dope.market.synthetic_trades import SyntheticSource, model_for, on_grid
from dope.types import FloatArray, IntArray

__all__ = ["SyntheticSource", "configured_bars", "generate_bars", "step_ms_for"]


def step_ms_for(interval_ms: int) -> int:
    """The model step behind bars of ``interval_ms``: 10 s, or ``gcd(interval, 10 s)`` below/off it."""
    return math.gcd(check_interval_ms(interval_ms), STEP_MS)


def generate_bars(symbols: Sequence[str], start_ms: int, end_ms: int, interval_ms: int = STEP_MS, *,
                  seed: int = 7, params: SyntheticParams | None = None,
                  rate_scale: float = 1.0, regimes: Sequence[SyntheticRegime] = ()) -> dict[str, pd.DataFrame]:
    """Bars of every window from ``align(start_ms)`` up to ``end_ms`` (exclusive), per symbol.

    Intervals that are multiples of 10 s aggregate the 10 s path that
    :class:`SyntheticSource` trades on (same seed and start, same path);
    other intervals run the same dynamics on a ``gcd(interval, 10 s)`` step. ``regimes`` switch the
    dynamics at given market times (``docs/synthetic.md``, Regimes).
    """
    _check_request(symbols, start_ms, end_ms)
    params = params or load_params()
    first = align(start_ms, interval_ms)
    n_bars = -(-(end_ms - first) // interval_ms)
    workers = max(1, min(len(symbols), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        frames = pool.map(lambda s: _symbol_bars(s, params, seed, first, n_bars, interval_ms, rate_scale,
                                                 regimes), symbols)
        return dict(zip(symbols, frames, strict=True))


def configured_bars(config: SyntheticConfig, symbols: Sequence[str], start_ms: int, end_ms: int,
                    interval_ms: int = STEP_MS, *, seed: int | None = None) -> dict[str, pd.DataFrame]:
    """:func:`generate_bars` of the market ``[synthetic]`` describes (its params file, rate scale, regimes
    and, unless ``seed`` is given, seed): the bars of the trades its :class:`SyntheticSource` streams."""
    return generate_bars(symbols, start_ms, end_ms, interval_ms, seed=config.seed if seed is None else seed,
                         params=load_params(config.params or None), rate_scale=config.rate_scale,
                         regimes=config.regimes)


def _check_request(symbols: Sequence[str], start_ms: int, end_ms: int) -> None:
    if not symbols:
        raise UserError("no symbol given to the synthetic market")
    if len(set(symbols)) != len(symbols):
        raise UserError(f"duplicate symbols: {list(symbols)}")
    if end_ms <= start_ms:
        raise UserError(f"end {end_ms} must be after start {start_ms}")


def _symbol_bars(symbol: str, params: SyntheticParams, seed: int, first: int, n_bars: int,
                 interval_ms: int, rate_scale: float, regimes: Sequence[SyntheticRegime]) -> pd.DataFrame:
    step_ms = step_ms_for(interval_ms)
    model = model_for(symbol, params, seed, step_ms, rate_scale, regimes)
    n_steps = n_bars * (interval_ms // step_ms)
    steps = model.simulate(model.initial_state(), first, first + n_steps * step_ms)
    steps = Steps(*(getattr(steps, n)[:n_steps] for n in ("open_time", "sigma", "x_start", "x_end",
                                                             "count", "buys")))
    frame = step_bars(symbol, steps, model.params, stream(seed, symbol, BARS, first, step_ms), step_ms)
    return frame if interval_ms == step_ms else resample_bars(frame, step_ms, interval_ms)


def step_bars(symbol: str, steps: Steps, p: SymbolParams, rng: np.random.Generator,
              step_ms: int) -> pd.DataFrame:
    """One bar per model step: close = the step's last trade, open = the previous close,
    high/low = the extremes of a Brownian bridge between them, volumes summed log-normal sizes."""
    traded = steps.count > 0
    start = on_grid(np.exp(steps.x_start[:1]), p.tick_size)
    close = _carry(on_grid(np.exp(steps.x_end), p.tick_size), traded, float(start[0]))
    open_ = np.concatenate((start, close[:-1]))
    high, low = _extremes(steps, rng, p.tick_size)
    high = np.where(traded, np.maximum(np.maximum(open_, close), high), close)
    low = np.where(traded, np.minimum(np.minimum(open_, close), low), close)
    buy_vol = _sum_sizes(steps.buys, p, rng)
    volume = buy_vol + _sum_sizes(steps.count - steps.buys, p, rng)
    vwap = np.clip((open_ + high + low + close) / 4.0, low, high)
    return _frame(symbol, steps, step_ms, (open_, high, low, close, vwap), volume, buy_vol)


def _carry(close: FloatArray, traded: np.ndarray, initial: float) -> FloatArray:
    """Each step's last traded price: its own close if it traded, else the one before."""
    index = np.where(traded, np.arange(len(close)), -1)
    last = np.maximum.accumulate(index)
    return np.where(last >= 0, close[np.maximum(last, 0)], initial)


def _extremes(steps: Steps, rng: np.random.Generator, tick: float) -> tuple[FloatArray, FloatArray]:
    """Max and min of a Brownian bridge from ``x_start`` to ``x_end`` with variance ``sigma**2``."""
    u = rng.random((2, len(steps)))
    move = steps.x_end - steps.x_start
    var = steps.sigma**2
    mid = steps.x_start + steps.x_end
    up = (mid + np.sqrt(move**2 - 2.0 * var * np.log1p(-u[0]))) / 2.0
    down = (mid - np.sqrt(move**2 - 2.0 * var * np.log1p(-u[1]))) / 2.0
    return on_grid(np.exp(up), tick), on_grid(np.exp(down), tick)


def _sum_sizes(count: IntArray, p: SymbolParams, rng: np.random.Generator) -> FloatArray:
    """Sum of ``count`` log-normal trade sizes, as one log-normal of the same mean and variance
    (Fenton-Wilkinson), on the quantity step and at least one step per trade."""
    n = np.maximum(count, 1).astype(np.float64)
    s2 = np.log1p(np.expm1(p.size_log_sd**2) / n)
    total = np.exp(np.log(n * p.mean_trade_size) - s2 / 2.0 + np.sqrt(s2) * rng.standard_normal(len(n)))
    steps = np.maximum(np.round(total / p.step_size), count)
    return np.where(count > 0, on_grid(steps * p.step_size, p.step_size, floor_one=False), 0.0)


def _frame(symbol: str, steps: Steps, step_ms: int, prices: tuple[FloatArray, ...], volume: FloatArray,
           buy_vol: FloatArray) -> pd.DataFrame:
    open_, high, low, close, vwap = prices
    empty = steps.count == 0
    first_id = np.cumsum(steps.count) - steps.count + 1
    columns = {
        "open_time": steps.open_time, "close_time": steps.open_time + step_ms - 1,
        "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "quote_volume": volume * vwap, "count": steps.count, "taker_buy_volume": buy_vol,
        "taker_buy_quote_volume": buy_vol * vwap, "vwap": vwap, "empty": empty,
        "first_trade_id": np.where(empty, -1, first_id),
        "last_trade_id": np.where(empty, -1, first_id + steps.count - 1),
    }
    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=dtype) for name, dtype in BAR_DTYPES.items()})
    frame.insert(0, "symbol", symbol)
    return frame
