"""Invariants of generated bars for any seed, interval, start, symbol and regime switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from dope.config import SyntheticRegime
from dope.market.synthetic import generate_bars

T0 = 1_704_067_200_000
INTERVALS = [1_000, 2_000, 5_000, 7_000, 10_000, 30_000, 60_000, 900_000]
REGIMES = st.none() | st.builds(
    lambda at, vol, rate, ar, drift: (at, dict(vol_scale=vol, rate_scale=rate, autocorr=ar, drift=drift)),
    st.floats(0, 1), st.floats(0.2, 5), st.floats(0.01, 5), st.floats(-0.95, 0.95), st.floats(-5, 5))
"""None, or where in the span a regime starts (fraction) and its fields."""


def _check_consistent(frame: pd.DataFrame) -> None:
    low, high = frame["low"].to_numpy(), frame["high"].to_numpy()
    for name in ("open", "close", "vwap"):
        values = frame[name].to_numpy()
        slack = 1e-12 * high if name == "vwap" else 0.0  # resampled vwap = quote / volume, to float rounding
        assert np.all(low - slack <= values) and np.all(values <= high + slack), name
    assert np.all(low > 0)
    volume, taker = frame["volume"].to_numpy(), frame["taker_buy_volume"].to_numpy()
    assert np.all((taker >= 0) & (taker <= volume))
    count, empty = frame["count"].to_numpy(), frame["empty"].to_numpy()
    assert np.array_equal(empty, count == 0) and np.array_equal(volume > 0, count > 0)
    ids = frame.loc[~empty, ["first_trade_id", "last_trade_id"]].to_numpy()
    assert np.array_equal(ids[:, 1] - ids[:, 0] + 1, count[~empty])
    assert np.all(ids[1:, 0] == ids[:-1, 1] + 1)


def _check_carried(frame: pd.DataFrame) -> None:
    empty = frame["empty"].to_numpy()
    close = frame["close"].to_numpy()
    carried = np.flatnonzero(empty[1:]) + 1
    assert np.array_equal(close[carried], close[carried - 1])
    for name in ("open", "high", "low"):
        assert np.array_equal(frame[name].to_numpy()[empty], close[empty])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), interval=st.sampled_from(INTERVALS), offset=st.integers(0, 86_400_000),
       symbol=st.sampled_from(["BTCUSDT", "DOGEUSDT", "LINKUSDT", "NEWUSDT"]),
       rate=st.sampled_from([0.001, 0.05, 1.0]), regime=REGIMES)
def test_bars_are_consistent(seed: int, interval: int, offset: int, symbol: str, rate: float,
                             regime: tuple[float, dict[str, float]] | None) -> None:
    start = T0 + offset
    end = start + 400 * interval
    regimes = [] if regime is None else [SyntheticRegime(start=int(start + regime[0] * (end - start)), **regime[1])]
    frame = generate_bars([symbol], start, end, interval, seed=seed, rate_scale=rate, regimes=regimes)[symbol]
    assert len(frame) in (400, 401)
    assert np.all(np.diff(frame["open_time"].to_numpy()) == interval)
    _check_consistent(frame)
    _check_carried(frame)
