"""Bars and predictions for trader tests: a seeded random walk and its messages."""

from __future__ import annotations

import numpy as np

from dope.messages import Bar, Prediction

INTERVAL = 10_000
START = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a UTC midnight


def make_bar(open_time: int, open_: float, close: float, symbol: str = "BTCUSDT", interval: int = INTERVAL) -> Bar:
    """A bar with the given open and close (high/low around them)."""
    return Bar(symbol=symbol, event_time=open_time + interval - 1, interval_ms=interval, open_time=open_time,
               close_time=open_time + interval - 1, open=open_, high=max(open_, close), low=min(open_, close),
               close=close, volume=1.0, quote_volume=close, count=1, taker_buy_volume=0.5,
               taker_buy_quote_volume=close / 2, vwap=close, empty=False, first_trade_id=1, last_trade_id=1)


def make_prediction(open_time: int, value: float | None, symbol: str = "BTCUSDT", interval: int = INTERVAL
                    ) -> Prediction:
    return Prediction(symbol=symbol, event_time=open_time + interval - 1, open_time=open_time, prediction=value,
                      model_id="m", chosen_by="champion" if value is not None else "none", deadline_ms=100)


def walk(n: int, seed: int = 3, start: int = START, symbol: str = "BTCUSDT") -> tuple[list[Bar], list[float]]:
    """``n`` bars of a random walk and predictions that are noisy peeks of the next return."""
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n + 1)))
    opens = np.concatenate([[100.0], closes[:-1]]) * (1 + rng.normal(0, 0.0003, n + 1))
    bars = [make_bar(start + i * INTERVAL, float(opens[i]), float(closes[i]), symbol) for i in range(n)]
    preds = [float(x) for x in np.log(closes[1:] / closes[:-1]) + rng.normal(0, 0.002, n)]
    return bars, preds
