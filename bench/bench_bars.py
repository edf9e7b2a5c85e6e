"""Vectorized trade -> bar aggregation of 20 M trades against pandas' resample and a plain NumPy pass.

Targets (issue 2): at least 3x pandas' ``resample`` and within 1.5x of a NumPy
``searchsorted``/``reduceat`` pass over the same arrays, both measured here in the same run.

    .venv/bin/python -m bench.bench_bars [--trades 20000000]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from bench.common import best_time, report
from dope.bars import TradeArrays, build_bars

INTERVAL_MS = 10_000


def make_trades(n: int, seed: int = 1) -> TradeArrays:
    """``n`` trades, about 20 a second with bursts, sorted by time."""
    rng = np.random.default_rng(seed)
    time = 1_700_000_000_000 + np.cumsum(rng.exponential(50.0, n)).astype(np.int64)
    price = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-4, n)))
    qty = rng.lognormal(-3.0, 1.0, n)
    return TradeArrays.raw(time, np.arange(n, dtype=np.int64), price, qty, rng.random(n) < 0.5)


def numpy_pass(t: TradeArrays) -> dict[str, np.ndarray]:
    """The floor: windows by searchsorted, then one reduceat per column (no empty-bar handling)."""
    window = t.time - t.time % INTERVAL_MS
    edges = np.flatnonzero(np.diff(window)) + 1
    starts = np.concatenate(([0], edges))
    quote = t.price * t.qty
    taker = ~t.is_buyer_maker
    return {
        "open_time": window[starts], "open": t.price[starts], "high": np.maximum.reduceat(t.price, starts),
        "low": np.minimum.reduceat(t.price, starts), "close": t.price[np.append(edges, len(t)) - 1],
        "volume": np.add.reduceat(t.qty, starts), "quote_volume": np.add.reduceat(quote, starts),
        "count": np.diff(np.append(starts, len(t))),
        "taker_buy_volume": np.add.reduceat(np.where(taker, t.qty, 0.0), starts),
        "taker_buy_quote_volume": np.add.reduceat(np.where(taker, quote, 0.0), starts),
    }


def pandas_resample(t: TradeArrays) -> pd.DataFrame:
    """What a pandas user writes: resample a DatetimeIndex frame."""
    frame = pd.DataFrame({"price": t.price, "qty": t.qty, "quote": t.price * t.qty,
                          "taker": np.where(t.is_buyer_maker, 0.0, t.qty)},
                         index=pd.to_datetime(t.time, unit="ms"))
    grouped = frame.resample("10s")
    out = grouped["price"].ohlc()
    sums = grouped[["qty", "quote", "taker"]].sum()
    out["count"] = grouped["price"].count()
    return out.join(sums)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=20_000_000)
    n = parser.parse_args().trades
    trades = make_trades(n)
    ours = best_time(lambda: build_bars(trades, "X", INTERVAL_MS))
    floor = best_time(lambda: numpy_pass(trades))
    pandas = best_time(lambda: pandas_resample(trades), repeat=1)
    report("dope.bars.build_bars (vectorized)", ours, n)
    report("baseline: NumPy searchsorted/reduceat pass", floor, n)
    report("baseline: pandas resample", pandas, n)
    print(f"speed-up over pandas resample: {pandas / ours:.1f}x (target >= 3x)")
    print(f"time relative to the NumPy pass: {ours / floor:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
