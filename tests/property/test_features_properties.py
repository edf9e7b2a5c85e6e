"""Properties of dope.features: online == offline at every step (real klines and the synthetic market),
no look-ahead under truncation, explicit warm-up, and finite memory (a late start catches up exactly)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dope.bars import bars_from_frame
from dope.features import FeatureParams, FeatureSet, OnlineFeaturizer, compute_features
from dope.market.synthetic import generate_bars
from dope.store.files import read_klines
from tests.conftest import require_shared_data

START = 1_704_067_200_000
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 1h klines around the real 2023-03-24 exchange outage (a missing hour and an empty bar) and 15m of 2025.
KLINE_SLICES = {"1h": slice(9_800, 11_800), "15m": slice(20_000, 22_000)}
KLINE_FILES = {"1h": "{}-1h-2022-01-01_2025-12-31.csv.gz", "15m": "{}-15m-2024-12-30_2025-12-31.csv.gz"}


@lru_cache(maxsize=8)
def klines(interval: str, symbol: str) -> tuple[pd.DataFrame, int]:
    path = require_shared_data("binance", "klines", interval, KLINE_FILES[interval].format(symbol))
    got = read_klines(path)
    return got.frame.iloc[KLINE_SLICES[interval]].reset_index(drop=True), got.interval_ms


@lru_cache(maxsize=8)
def synthetic(seed: int, rate_scale: float) -> dict[str, pd.DataFrame]:
    return generate_bars(["BTCUSDT", "ETHUSDT"], START, START + 10_000 * 1_500, seed=seed, rate_scale=rate_scale)


@st.composite
def feature_sets(draw: st.DrawFn, interval_ms: int, context: tuple[str, ...] = ()) -> FeatureSet:
    """Small random windows (so a few hundred bars hold many vectors)."""
    def windows(low: int) -> st.SearchStrategy[tuple[int, ...]]:
        return st.lists(st.integers(low, 40), min_size=1, max_size=3, unique=True).map(tuple)
    params = FeatureParams(interval_ms=interval_ms, return_lags=draw(windows(1)), vol_windows=draw(windows(2)),
                           range_windows=draw(windows(1)), z_windows=draw(windows(2)),
                           flow_windows=draw(windows(1)), ma_windows=draw(windows(1)),
                           rsi_windows=draw(windows(1)), time_of_day=draw(st.booleans()),
                           context_symbols=context, context_lags=draw(windows(1)))
    return FeatureSet("prop", params)


def online_rows(fs: FeatureSet, frame: pd.DataFrame,
                context: pd.DataFrame | None = None) -> tuple[list[int | None], np.ndarray]:
    """Per input bar: the emitted vector's open time (or None), and the emitted values."""
    featurizer = OnlineFeaturizer(fs, frame["symbol"].iloc[0])
    ctx = {} if context is None else {b.open_time: b for b in bars_from_frame(context, fs.params.interval_ms)}
    times: list[int | None] = []
    values = []
    for bar in bars_from_frame(frame, fs.params.interval_ms):
        other = ctx.get(bar.open_time)
        v = featurizer.update(bar, None if other is None else {other.symbol: other})
        times.append(None if v is None else v.open_time)
        if v is not None:
            values.append(v.values)
    return times, np.array(values).reshape(len(values), len(fs.names))


def assert_online_equals_offline(fs: FeatureSet, frame: pd.DataFrame, context: pd.DataFrame | None) -> None:
    ctx = None if context is None else {context["symbol"].iloc[0]: context}
    offline = compute_features(frame, fs, ctx)
    times, values = online_rows(fs, frame, context)
    assert [t for t in times if t is not None] == offline["open_time"].tolist()
    expected = offline[list(fs.names)].to_numpy()
    assert np.isfinite(expected).all()
    assert values.shape == expected.shape and np.abs(values - expected).max(initial=0.0) <= 1e-12


@SETTINGS
@given(data=st.data(), interval=st.sampled_from(["1h", "15m"]),
       pair=st.sampled_from([("ETHUSDT", "BTCUSDT"), ("SOLUSDT", "ETHUSDT"), ("BTCUSDT", None)]),
       bounds=st.tuples(st.integers(0, 1_000), st.integers(150, 1_000)))
def test_online_equals_offline_on_real_klines(data: st.DataObject, interval: str, pair: tuple[str, str | None],
                                              bounds: tuple[int, int]) -> None:
    frame, interval_ms = klines(interval, pair[0])
    context = None if pair[1] is None else klines(interval, pair[1])[0]
    fs = data.draw(feature_sets(interval_ms, () if pair[1] is None else (pair[1],)))
    start, length = bounds
    if context is not None and data.draw(st.booleans()):
        context = context.drop(index=context.index[start + 60:start + 63])  # missing context bars
    assert_online_equals_offline(fs, frame.iloc[start:start + length].reset_index(drop=True), context)


def test_real_outage_resets_warm_up() -> None:
    frame, interval_ms = klines("1h", "ETHUSDT")
    fs = FeatureSet("prop", FeatureParams(interval_ms=interval_ms))
    offline = compute_features(frame, fs)
    assert offline.attrs["gap_resets"] == 1
    assert_online_equals_offline(fs, frame, None)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 3), rate_scale=st.sampled_from([1.0, 0.002]),
       with_context=st.booleans())
def test_online_equals_offline_on_synthetic_market(data: st.DataObject, seed: int, rate_scale: float,
                                                   with_context: bool) -> None:
    frames = synthetic(seed, rate_scale)
    fs = data.draw(feature_sets(10_000, ("BTCUSDT",) if with_context else ()))
    assert_online_equals_offline(fs, frames["ETHUSDT"], frames["BTCUSDT"] if with_context else None)


@SETTINGS
@given(data=st.data(), cuts=st.lists(st.integers(1, 1_500), min_size=1, max_size=5))
def test_truncation_leaves_earlier_rows_unchanged(data: st.DataObject, cuts: list[int]) -> None:
    frame = synthetic(1, 0.002)["BTCUSDT"]
    fs = data.draw(feature_sets(10_000))
    full = compute_features(frame, fs)
    full_times, full_values = online_rows(fs, frame)
    for cut in cuts:
        part = compute_features(frame.iloc[:cut], fs)
        pd.testing.assert_frame_equal(part, full[full["open_time"] < frame["open_time"].iloc[cut - 1] + 1],
                                      check_index_type=False)
        times, values = online_rows(fs, frame.iloc[:cut])
        assert times == full_times[:cut]
        np.testing.assert_array_equal(values, full_values[:len(values)])


@SETTINGS
@given(data=st.data(), late=st.integers(1, 600))
def test_warm_up_and_a_late_start_catch_up_exactly(data: st.DataObject, late: int) -> None:
    frame = synthetic(2, 1.0)["ETHUSDT"]
    fs = data.draw(feature_sets(10_000))
    full = compute_features(frame, fs)
    assert full["open_time"].iloc[0] == frame["open_time"].iloc[fs.warmup - 1]
    assert len(full) == len(frame) - fs.warmup + 1
    times, values = online_rows(fs, frame.iloc[late:])
    assert times[:fs.warmup - 1] == [None] * (fs.warmup - 1) and None not in times[fs.warmup - 1:]
    expected = full[full["open_time"] >= frame["open_time"].iloc[late + fs.warmup - 1]]
    np.testing.assert_array_equal(values, expected[list(fs.names)].to_numpy())
