"""Online/offline parity of every registered feature (built-in and plugin), feature by feature.

The same seeded bars (a gap and an empty bar included) go through the offline path
(:func:`compute_features`) and, one at a time, through :class:`OnlineFeaturizer`; each feature's
column must agree to 1e-12, and emit at the same open times. ``dope models check`` and the test suite
run it on every name of :func:`registered_features`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np
import pandas as pd

from dope.features.featureset import FeatureSet, default_feature_set
from dope.features.offline import compute_features
from dope.features.online import OnlineFeaturizer

TOLERANCE: Final = 1e-12
INTERVAL_MS: Final = 10_000


def registered_features(interval_ms: int = INTERVAL_MS) -> tuple[str, ...]:
    """Every feature of the default set with every installed plugin feature."""
    return default_feature_set(interval_ms).names


@lru_cache(maxsize=4)
def parity_bars(seed: int = 7, n: int = 600) -> pd.DataFrame:
    """Seeded random-walk bars of BTCUSDT with a gap (5 missing bars) and an empty bar, for both paths."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(0.002 * rng.standard_normal(n)))
    spread = close * 0.001 * rng.random(n)
    volume = rng.gamma(2.0, 1.0, n)
    volume[n // 3] = 0.0  # an empty bar
    frame = pd.DataFrame({
        "symbol": "BTCUSDT", "open_time": np.arange(n, dtype=np.int64) * INTERVAL_MS, "high": close + spread,
        "low": close - spread, "close": close, "volume": volume, "quote_volume": volume * close,
        "count": np.where(volume > 0, rng.integers(1, 50, n), 0), "taker_buy_volume": volume * rng.random(n),
        "empty": volume == 0.0})
    frame["close_time"] = frame["open_time"] + INTERVAL_MS - 1
    frame["open"] = frame["close"].shift(1, fill_value=close[0])
    frame["taker_buy_quote_volume"] = frame["taker_buy_volume"] * close
    frame["vwap"] = close
    frame["first_trade_id"] = frame["last_trade_id"] = np.cumsum(frame["count"]).astype(np.int64)
    return frame.drop(index=range(n // 2, n // 2 + 5)).reset_index(drop=True)


@lru_cache(maxsize=4)
def _both_paths(fs: FeatureSet) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    from dope.bars import bars_from_frame

    frame = parity_bars()
    offline = compute_features(frame, fs)
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    emitted = [v for v in map(featurizer.update, bars_from_frame(frame, INTERVAL_MS)) if v is not None]
    values = np.array([v.values for v in emitted]).reshape(len(emitted), len(fs.names))
    return offline, values, [v.open_time for v in emitted]


def feature_parity(name: str, fs: FeatureSet | None = None) -> tuple[bool, str]:
    """Whether feature ``name`` is the same online and offline: ``(passed, detail)``."""
    fs = fs or default_feature_set(INTERVAL_MS)
    offline, online, times = _both_paths(fs)
    if times != offline["open_time"].tolist():
        return False, f"online emitted {len(times)} vectors, offline {len(offline)} (or at other open times)"
    column = fs.names.index(name)
    expected = offline[name].to_numpy()
    if not np.isfinite(expected).all():
        return False, "offline values hold NaN or inf"
    worst = float(np.abs(online[:, column] - expected).max(initial=0.0))
    detail = f"{len(expected)} vectors, max |online - offline| {worst:.1e}"
    return worst <= TOLERANCE, detail


def parity_outcomes() -> list[tuple[str, bool, str]]:
    """``(name, passed, detail)`` for every registered feature."""
    fs = default_feature_set(INTERVAL_MS)
    return [(name, *feature_parity(name, fs)) for name in fs.names]
