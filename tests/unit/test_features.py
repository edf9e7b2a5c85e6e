"""dope.features: what each feature means (against pandas), bad input, gaps, empty bars, context,
the version, the Features message and the training target."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from dope.bars import bars_from_frame
from dope.features import (
    FeatureError,
    FeatureInputError,
    FeatureParams,
    FeatureSet,
    OnlineFeaturizer,
    compute_features,
    default_feature_set,
    forward_log_return,
    training_matrix,
)
from dope.market.synthetic import generate_bars
from dope.messages import Features, decode, encode, topic_of

START = 1_704_067_200_000
IVL = 10_000


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate_bars(["BTCUSDT", "ETHUSDT"], START, START + IVL * 1500, seed=11)


def online_rows(fs: FeatureSet, frame: pd.DataFrame,
                context: dict[str, pd.DataFrame] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Open times and values of every vector the online featurizer emits over ``frame``."""
    featurizer = OnlineFeaturizer(fs, frame["symbol"].iloc[0])
    ctx = {s: {b.open_time: b for b in bars_from_frame(f, fs.params.interval_ms)} for s, f in (context or {}).items()}
    out = []
    for bar in bars_from_frame(frame, fs.params.interval_ms):
        v = featurizer.update(bar, {s: m[bar.open_time] for s, m in ctx.items() if bar.open_time in m})
        if v is not None:
            out.append(v)
    return np.array([v.open_time for v in out]), np.array([v.values for v in out]).reshape(len(out), -1)


def reference(frame: pd.DataFrame, p: FeatureParams) -> pd.DataFrame:
    """The features written plainly with pandas rolling windows (bars without empty ones)."""
    c, lc = frame["close"], np.log(frame["close"])
    r = lc.diff()
    lv, ln = np.log1p(frame["volume"]), np.log1p(frame["count"].astype(float))
    vol, q, tb = frame["volume"], frame["quote_volume"], frame["taker_buy_volume"]
    up, down = r.clip(lower=0), (-r).clip(lower=0)
    out: dict[str, pd.Series] = {}
    out |= {f"ret_{k}": lc - lc.shift(k) for k in p.return_lags}
    out |= {f"vol_{w}": r.rolling(w).std() for w in p.vol_windows}
    out |= {f"range_{w}": ((frame["high"] - frame["low"]) / c).rolling(w).mean() for w in p.range_windows}
    out |= {f"ma_dist_{w}": lc - np.log(c.rolling(w).mean()) for w in p.ma_windows}
    out |= {f"rsi_{w}": (up.rolling(w).sum() - down.rolling(w).sum()) / (up + down).rolling(w).sum()
            for w in p.rsi_windows}
    for w in p.z_windows:
        out[f"volume_z_{w}"] = (lv - lv.rolling(w).mean()) / lv.rolling(w).std()
        out[f"count_z_{w}"] = (ln - ln.rolling(w).mean()) / ln.rolling(w).std()
    for w in p.flow_windows:
        out[f"taker_buy_{w}"] = tb.rolling(w).sum() / vol.rolling(w).sum() - 0.5
        out[f"vwap_dist_{w}"] = lc - np.log(q.rolling(w).sum() / vol.rolling(w).sum())
    phase = 2 * np.pi * (frame["open_time"] % 86_400_000) / 86_400_000
    out |= {"tod_sin": np.sin(phase), "tod_cos": np.cos(phase)}
    return pd.DataFrame(out)


def test_every_feature_matches_a_plain_pandas_definition(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["BTCUSDT"]
    assert not frame["empty"].any()
    fs = default_feature_set(IVL)
    got = compute_features(frame, fs)
    want = reference(frame, fs.params).iloc[fs.warmup - 1:]
    assert list(got.columns) == ["open_time", "close_time", *fs.names]
    assert len(got) == len(frame) - fs.warmup + 1
    for name in fs.names:
        np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=1e-8, atol=1e-12,
                                   err_msg=name)


def test_online_equals_offline_with_context(frames: dict[str, pd.DataFrame]) -> None:
    fs = default_feature_set(IVL, ("BTCUSDT",))
    offline = compute_features(frames["ETHUSDT"], fs, {"BTCUSDT": frames["BTCUSDT"]})
    times, values = online_rows(fs, frames["ETHUSDT"], {"BTCUSDT": frames["BTCUSDT"]})
    assert np.array_equal(times, offline["open_time"].to_numpy())
    np.testing.assert_array_equal(values, offline[list(fs.names)].to_numpy())
    lc = np.log(frames["BTCUSDT"]["close"].to_numpy())
    np.testing.assert_allclose(offline["ctx_BTCUSDT_ret_6"], (lc[6:] - lc[:-6])[fs.warmup - 7:], atol=1e-15)


def test_missing_context_bar_carries_its_last_close_and_is_counted(frames: dict[str, pd.DataFrame]) -> None:
    fs = default_feature_set(IVL, ("BTCUSDT",))
    btc = frames["BTCUSDT"].drop(index=[400, 401]).reset_index(drop=True)
    offline = compute_features(frames["ETHUSDT"], fs, {"BTCUSDT": btc})
    assert offline.attrs["context_missing"] == 2
    rows = offline.set_index("open_time")
    t400, t402 = frames["ETHUSDT"]["open_time"].iloc[[400, 402]]
    assert rows.loc[t400, "ctx_BTCUSDT_ret_1"] == 0.0
    closes = frames["BTCUSDT"]["close"].to_numpy()
    assert rows.loc[t402, "ctx_BTCUSDT_ret_1"] == pytest.approx(np.log(closes[402] / closes[399]), abs=1e-15)
    times, values = online_rows(fs, frames["ETHUSDT"], {"BTCUSDT": btc})
    np.testing.assert_array_equal(values, offline[list(fs.names)].to_numpy())


def test_bad_context_close_online_counts_as_missing(frames: dict[str, pd.DataFrame]) -> None:
    fs = default_feature_set(IVL, ("BTCUSDT",))
    featurizer = OnlineFeaturizer(fs, "ETHUSDT")
    eth, btc = bars_from_frame(frames["ETHUSDT"].iloc[:200], IVL), bars_from_frame(frames["BTCUSDT"].iloc[:200], IVL)
    out = [featurizer.update(e, {"BTCUSDT": b.__replace__(close=float("inf")) if i == 150 else b})
           for i, (e, b) in enumerate(zip(eth, btc, strict=True))]
    assert featurizer.counts["rejected_context"] == 1 and featurizer.counts["context_missing"] == 1
    vector = out[150]
    assert vector is not None and vector.values[fs.names.index("ctx_BTCUSDT_ret_1")] == 0.0


def test_context_symbol_without_frame_is_refused(frames: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(FeatureInputError, match="needs context bars of BTCUSDT"):
        compute_features(frames["ETHUSDT"], default_feature_set(IVL, ("BTCUSDT",)))


def test_empty_bar_has_zero_return_range_and_volume(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["BTCUSDT"].copy()
    k = 500
    frame.loc[k, ["close", "high", "volume", "quote_volume", "taker_buy_volume", "count", "empty"]] = (
        frame.loc[k, "close"] * 1.5, frame.loc[k, "close"] * 2, 0.0, 0.0, 0.0, 0, True)
    fs = default_feature_set(IVL)
    rows = compute_features(frame, fs).set_index("open_time")
    close = frame["close"].to_numpy()
    t = frame["open_time"].to_numpy()
    assert rows.loc[t[k], "ret_1"] == 0.0 and rows.loc[t[k], "range_1"] == 0.0
    assert rows.loc[t[k + 1], "ret_1"] == pytest.approx(np.log(close[k + 1] / close[k - 1]), abs=1e-15)
    assert rows.loc[t[k], "volume_z_60"] < -1.0
    _, values = online_rows(fs, frame)
    np.testing.assert_array_equal(values, rows[list(fs.names)].to_numpy())


def test_gap_restarts_warm_up_in_both_paths(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["BTCUSDT"].drop(index=700).reset_index(drop=True)
    fs = default_feature_set(IVL)
    offline = compute_features(frame, fs)
    assert offline.attrs["gap_resets"] == 1
    t = frame["open_time"].to_numpy()
    emitted = set(offline["open_time"])
    assert t[699] in emitted and t[700 + fs.warmup - 2] not in emitted and t[700 + fs.warmup - 1] in emitted
    times, values = online_rows(fs, frame)
    assert np.array_equal(times, offline["open_time"].to_numpy())


@pytest.mark.parametrize(("column", "value", "what"), [
    ("close", np.nan, "is NaN or infinite"), ("volume", np.inf, "is NaN or infinite"),
    ("low", 0.0, "is not positive"), ("count", -1, "is negative")])
def test_bad_value_names_column_and_row(frames: dict[str, pd.DataFrame], column: str, value: float,
                                        what: str) -> None:
    frame = frames["BTCUSDT"].copy()
    frame[column] = frame[column].astype(float)
    frame.loc[17, column] = value
    with pytest.raises(FeatureInputError, match=rf"BTCUSDT bars row 17 \(open_time \d+\): column '{column}' {what}"):
        compute_features(frame, default_feature_set(IVL))


def test_unsorted_or_incomplete_frames_are_refused(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["BTCUSDT"]
    with pytest.raises(FeatureInputError, match="row 5 .*not after"):
        compute_features(frame.iloc[[0, 1, 2, 3, 4, 4, 5]], default_feature_set(IVL))
    with pytest.raises(FeatureInputError, match=r"lacks columns \['taker_buy_volume'\]"):
        compute_features(frame.drop(columns="taker_buy_volume"), default_feature_set(IVL))
    with pytest.raises(FeatureInputError, match="several symbols"):
        compute_features(pd.concat([frame, frames["ETHUSDT"]]), default_feature_set(IVL))


def test_online_rejections_are_counted_and_leave_the_state_alone(frames: dict[str, pd.DataFrame],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    frame = frames["BTCUSDT"].iloc[:300]
    fs = default_feature_set(IVL)
    bars = bars_from_frame(frame, IVL)
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    out = []
    with caplog.at_level(logging.WARNING):
        for i, bar in enumerate(bars):
            if i == 150:
                assert featurizer.update(bar.__replace__(close=float("nan"))) is None
                assert featurizer.update(bar.__replace__(symbol="ETHUSDT")) is None
                assert featurizer.update(bar.__replace__(interval_ms=60_000)) is None
            out.append(featurizer.update(bar))
            if i == 200:
                assert featurizer.update(bars[100]) is None
    assert {k: featurizer.counts[k] for k in featurizer.counts if k.startswith("rejected")} == {
        "rejected_value": 1, "rejected_symbol": 1, "rejected_interval": 1, "rejected_order": 1,
        "rejected_context": 0}
    assert featurizer.counts["bars"] == 300 and featurizer.counts["emitted"] == 300 - fs.warmup + 1
    assert "NaN/inf" in caplog.text and "not after the last accepted" in caplog.text
    expected = compute_features(frame, fs)[list(fs.names)].to_numpy()
    np.testing.assert_array_equal(np.array([v.values for v in out if v is not None]), expected)


def test_version_follows_name_and_params() -> None:
    base = default_feature_set(IVL)
    assert base.version == default_feature_set(IVL).version and len(base.version) == 12
    others = [default_feature_set(IVL, return_lags=(1, 3, 6, 12, 31)), default_feature_set(60_000),
              default_feature_set(IVL, name="other"), default_feature_set(IVL, ("BTCUSDT",)),
              default_feature_set(IVL, time_of_day=False)]
    assert len({base.version, *(fs.version for fs in others)}) == 1 + len(others)
    assert base.describe()["version"] == base.version
    assert "tod_sin" not in default_feature_set(86_400_000).names


@pytest.mark.parametrize("bad", [{"vol_windows": (1,)}, {"return_lags": (0, 1)}, {"ma_windows": (5, 5)},
                                 {"interval_ms": 0}, {"context_symbols": ("A", "A")}])
def test_bad_params_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(FeatureError):
        FeatureSet("x", FeatureParams(**bad))  # type: ignore[arg-type]


def test_features_message_round_trips(frames: dict[str, pd.DataFrame]) -> None:
    fs = default_feature_set(IVL)
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    msgs = [featurizer.update(b) for b in bars_from_frame(frames["BTCUSDT"].iloc[:fs.warmup], IVL)]
    msg = msgs[-1]
    assert isinstance(msg, Features) and msgs[-2] is None
    assert msg.event_time == frames["BTCUSDT"]["close_time"].iloc[fs.warmup - 1]
    assert (msg.feature_set, msg.feature_version, len(msg.values)) == ("default", fs.version, len(fs.names))
    assert decode(encode(msg)) == msg and topic_of(msg) == "features.BTCUSDT"


def test_forward_log_return_and_training_matrix(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["BTCUSDT"].drop(index=1000).reset_index(drop=True)
    close, t = frame["close"].to_numpy(), frame["open_time"].to_numpy()
    target = forward_log_return(frame, 3).to_numpy()
    assert np.isnan(target[-3:]).all() and target[10] == pytest.approx(np.log(close[13] / close[10]))
    gapped = forward_log_return(frame, 3, IVL).to_numpy()
    assert np.isnan(gapped[997:1000]).all() and np.isfinite(gapped[[996, 1000]]).all()
    fs = default_feature_set(IVL)
    X, y, times = training_matrix(frame, fs, 3)
    rows = compute_features(frame, fs).set_index("open_time")
    assert X.shape == (len(y), len(fs.names)) and np.isfinite(X).all() and np.isfinite(y).all()
    np.testing.assert_array_equal(X, rows.loc[times, list(fs.names)].to_numpy())
    index = np.searchsorted(t, times)
    np.testing.assert_allclose(y, np.log(close[index + 3] / close[index]), atol=1e-15)
    assert times[-1] == t[-4] and not np.isin(t[997:1000], times).any()
    with pytest.raises(FeatureError, match="horizon"):
        forward_log_return(frame, 0)
