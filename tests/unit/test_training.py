"""Walk-forward: folds, purge and embargo, metrics by hand, the zero baseline, no look-ahead."""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import pytest

from dope.training import (
    WalkForwardConfig,
    compute_metrics,
    make_folds,
    train_rows,
    walk_forward_forecast,
)


class LeastSquares:
    """A tiny deterministic linear model; remembers the rows it was fitted on (column 0 = row number)."""

    def __init__(self, lookback: int = 1) -> None:
        self.lookback = lookback
        self.fitted_rows: list[int] = []
        self.coef = np.zeros(0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Self:
        self.fitted_rows = X[:, 0].astype(int).tolist()
        self.coef = np.linalg.lstsq(X[:, 1:], y, rcond=None)[0]
        return self

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        raw = X[:, 1:] @ self.coef
        if self.lookback == 1:
            return raw
        out = np.full(len(X), np.nan)
        for i in range(self.lookback - 1, len(X)):
            out[i] = raw[i - self.lookback + 1:i + 1].mean()
        return out


def dataset(n: int = 600, seed: int = 5, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 3))
    y = signal * features @ np.array([0.3, -0.2, 0.1]) + rng.normal(scale=0.5, size=n)
    return np.column_stack([np.arange(n), features]), y


@pytest.mark.parametrize("config", [
    WalkForwardConfig(n_folds=4, horizon=3),
    WalkForwardConfig(n_folds=3, horizon=5, embargo=7),
    WalkForwardConfig(n_folds=5, horizon=1, window="rolling", train_size=40),
    WalkForwardConfig(horizon=2, min_train=100, test_size=50, embargo=1),
])
def test_folds_never_overlap_and_leave_the_purge_gap(config: WalkForwardConfig) -> None:
    n = 500
    folds = make_folds(n, config)
    tested: set[int] = set()
    for fold in folds:
        train = set(range(fold.train_start, fold.train_stop))
        test = set(fold.test_rows)
        assert train and test and not train & test and not test & tested
        # every training label (rows i .. i + horizon) ends before the first test bar, embargo on top
        assert max(train) + config.horizon + config.embargo < min(test)
        assert all(i < min(test) for i in train)
        if config.window == "rolling":
            assert len(train) == config.train_size
        else:
            assert min(train) == 0
        tested |= test
    assert max(tested) == n - 1 and tested == set(range(min(tested), n))


def test_walk_forward_fits_only_on_purged_past_rows() -> None:
    X, y = dataset()
    config = WalkForwardConfig(n_folds=4, horizon=4, embargo=2)
    fitted: list[LeastSquares] = []

    def factory() -> LeastSquares:
        fitted.append(LeastSquares())
        return fitted[-1]

    result = walk_forward_forecast(X, y, factory, config)
    for model, fold in zip(fitted, result.folds, strict=True):
        assert model.fitted_rows == list(range(0, fold.test_start - 6))
    assert np.flatnonzero(result.test_mask).tolist() == list(range(result.folds[0].test_start, len(y)))
    assert np.isnan(result.predictions[:result.folds[0].test_start]).all()


def test_metrics_against_hand_computed_values() -> None:
    m = compute_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert m.rmse == pytest.approx(math.sqrt(2 / 4))
    assert m.ic == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))  # Spearman: 1 - 6 sum d^2 / (n (n^2 - 1))
    assert m.directional_accuracy == 1.0 and m.n == 4
    # zero targets have no direction; a zero forecast is half a hit; a wrong sign is a miss
    m = compute_metrics(np.array([0.01, -0.02, 0.0, 0.03, np.nan]), np.array([0.02, 0.01, 0.5, 0.0, 1.0]))
    assert m.n == 4 and m.n_directional == 3
    assert m.directional_accuracy == pytest.approx((1 + 0 + 0.5) / 3)
    assert m.rmse == pytest.approx(math.sqrt((0.01**2 + 0.03**2 + 0.5**2 + 0.03**2) / 4))
    ties = compute_metrics(np.array([1.0, 1.0, 2.0]), np.array([3.0, 2.0, 1.0]))
    assert ties.ic == pytest.approx(np.corrcoef([1.5, 1.5, 3], [3, 2, 1])[0, 1])


def test_zero_baseline_metrics() -> None:
    y = np.array([0.02, -0.01, 0.0, 0.04])
    zero = compute_metrics(y, np.zeros(4))
    assert zero.rmse == pytest.approx(math.sqrt((0.02**2 + 0.01**2 + 0.04**2) / 4))
    assert zero.directional_accuracy == 0.5 and math.isnan(zero.ic)
    assert zero.as_dict()["ic"] is None
    X, y2 = dataset()
    result = walk_forward_forecast(X, y2, LeastSquares, WalkForwardConfig(n_folds=3))
    mask = result.test_mask
    assert result.baseline == compute_metrics(y2[mask], np.zeros(int(mask.sum())))
    assert result.baseline.n == result.metrics.n == int(mask.sum())


def test_a_model_with_signal_beats_zero_and_one_without_does_not() -> None:
    X, y = dataset(signal=1.0)
    good = walk_forward_forecast(X, y, LeastSquares, WalkForwardConfig(n_folds=3))
    assert good.metrics.rmse < good.baseline.rmse and good.metrics.directional_accuracy > 0.55
    assert good.metrics.ic > 0.1
    X, y = dataset(signal=0.0)
    noise = walk_forward_forecast(X, y, LeastSquares, WalkForwardConfig(n_folds=3))
    assert noise.metrics.rmse > noise.baseline.rmse


@pytest.mark.parametrize("lookback", [1, 4])
def test_no_look_ahead_truncating_leaves_earlier_forecasts_unchanged(lookback: int) -> None:
    X, y = dataset()
    config = WalkForwardConfig(horizon=3, min_train=120, test_size=60)
    full = walk_forward_forecast(X, y, lambda: LeastSquares(lookback), config)
    for cut in (250, 301, 377, 480, 599):
        part = walk_forward_forecast(X[:cut], y[:cut], lambda: LeastSquares(lookback), config)
        np.testing.assert_array_equal(part.predictions, full.predictions[:cut])
    assert np.isfinite(full.predictions[config.min_train + config.gap:]).all()


def test_subsampling_strides_or_keeps_the_recent_rows() -> None:
    config = WalkForwardConfig(max_train_rows=100)
    strided = train_rows(0, 1_000, 1, config)
    assert len(strided) == 100 and strided[-1] == 999 and np.all(np.diff(strided) == 10)
    recent = train_rows(0, 1_000, 30, config)
    assert recent.tolist() == list(range(900, 1_000))
    assert train_rows(5, 50, 1, config).tolist() == list(range(5, 50))
    X, y = dataset()
    fitted: list[LeastSquares] = []
    walk_forward_forecast(X, y, lambda: fitted.append(LeastSquares()) or fitted[-1],
                          WalkForwardConfig(n_folds=2, max_train_rows=50))
    assert all(len(m.fitted_rows) <= 50 for m in fitted)


def test_bad_input_is_a_clear_error() -> None:
    X, y = dataset(50)
    y[3] = np.nan
    with pytest.raises(ValueError, match="1 target"):
        walk_forward_forecast(X, y, LeastSquares)
    with pytest.raises(ValueError, match="too few|would train on"):
        make_folds(8, WalkForwardConfig(n_folds=5, horizon=3))
    with pytest.raises(ValueError, match="rolling window needs train_size"):
        WalkForwardConfig(window="rolling")


def test_summary_is_json_ready() -> None:
    X, y = dataset()
    summary = walk_forward_forecast(X, y, LeastSquares, WalkForwardConfig(n_folds=2)).summary()
    assert summary["zero_baseline"]["directional_accuracy"] == 0.5
    assert len(summary["folds"]) == 2 and summary["folds"][1]["test"][1] == 600


@pytest.mark.parametrize(("kind", "params"), [
    ("ridge", {}),
    ("momentum", {}),
    ("lightgbm", {"n_estimators": 15, "num_leaves": 7, "min_child_samples": 20}),
    ("random_forest", {"n_estimators": 8, "max_depth": 4, "min_samples_leaf": 10}),
])
def test_no_look_ahead_with_real_models_on_synthetic_features(kind: str, params: dict[str, object]) -> None:
    from dope.features import default_feature_set, training_matrix
    from dope.market.synthetic import generate_bars
    from dope.models import make_model

    bars = generate_bars(["BTCUSDT"], 0, 1_500 * 60_000, 60_000, seed=2)["BTCUSDT"]
    X, y, _ = training_matrix(bars, default_feature_set(60_000), horizon=2)
    config = WalkForwardConfig(horizon=2, min_train=500, test_size=200)
    full = walk_forward_forecast(X, y, lambda: make_model(kind, **params), config)
    cut = len(y) - 317
    part = walk_forward_forecast(X[:cut], y[:cut], lambda: make_model(kind, **params), config)
    np.testing.assert_array_equal(part.predictions, full.predictions[:cut])
    assert full.metrics.n == len(y) - 502 and np.isfinite(full.metrics.rmse)
