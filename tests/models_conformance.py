"""The conformance suite every DOPE model passes (run for every kind by tests/unit/test_models_conformance.py).

Each check takes a factory of fresh unfitted models and data in time order, and asserts one
promise of the :class:`dope.models.Model` protocol. :func:`check_model` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from dope.models import Model, load_model
from dope.types import FloatArray

Factory = Callable[[], Model]


def sample_data(n: int = 400, n_features: int = 6, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """Features with memory (AR(1)) and a target that depends on them, plus noise."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, n_features))
    X[0] = rng.standard_normal(n_features)
    for i in range(1, n):
        X[i] = 0.7 * X[i - 1] + rng.standard_normal(n_features)
    y = 0.5 * X[:, 0] - 0.3 * np.tanh(X[:, 1] * X[:, 2]) + 0.5 * rng.standard_normal(n)
    return X, y


def check_reproducible(model: Model, factory: Factory, X: FloatArray, y: FloatArray) -> None:
    """A second fit of the same seeded model on the same data predicts the same, bit for bit."""
    np.testing.assert_array_equal(factory().fit(X, y).predict_many(X), model.predict_many(X))


def check_round_trip(model: Model, X: FloatArray, directory: Path) -> None:
    """save then load_model gives the same kind, metadata and predictions (one and many)."""
    model.save(directory)
    loaded = load_model(directory)
    assert type(loaded) is type(model) and loaded.kind == model.kind
    assert loaded.metadata() == model.metadata()
    np.testing.assert_array_equal(loaded.predict_many(X), model.predict_many(X))
    window = X[-model.lookback:]
    assert loaded.predict_one(window) == model.predict_one(window)


def check_one_equals_many(model: Model, X: FloatArray, cuts: int = 7) -> None:
    """predict_one on the window ending at row i equals predict_many's value for row i."""
    many = model.predict_many(X)
    lookback = model.lookback
    assert np.isnan(many[: lookback - 1]).all()
    for i in np.linspace(lookback - 1, len(X) - 1, cuts).astype(int):
        assert model.predict_one(X[i - lookback + 1: i + 1]) == many[i], f"row {i}"


def fit_without_mutation(factory: Factory, X: FloatArray, y: FloatArray) -> Model:
    """A fitted model; fit, predict_many and predict_one leave their inputs as they were."""
    X_before, y_before = X.copy(), y.copy()
    model = factory().fit(X, y)
    model.predict_many(X)
    model.predict_one(X[-model.lookback:])
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    return model


def check_no_look_ahead(model: Model, X: FloatArray, cuts: int = 6) -> None:
    """Truncating X at any point leaves every earlier prediction unchanged."""
    full = model.predict_many(X)
    for cut in np.linspace(model.lookback, len(X) - 1, cuts).astype(int):
        np.testing.assert_array_equal(model.predict_many(X[:cut]), full[:cut], err_msg=f"cut at {cut}")


def check_finite(model: Model, X: FloatArray) -> None:
    """Every prediction after the first lookback - 1 rows is a finite float."""
    many = model.predict_many(X)
    assert many.shape == (len(X),) and many.dtype == np.float64
    assert np.isfinite(many[model.lookback - 1:]).all()
    assert isinstance(model.predict_one(X[-model.lookback:]), float)


def check_model(factory: Factory, X: FloatArray, y: FloatArray, directory: Path) -> None:
    """Every check of the suite (two fits in all, so slow learners stay cheap to check)."""
    model = fit_without_mutation(factory, X, y)
    check_reproducible(model, factory, X, y)
    check_round_trip(model, X, directory)
    check_one_equals_many(model, X)
    check_no_look_ahead(model, X)
    check_finite(model, X)
