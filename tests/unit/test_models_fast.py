"""The compiled tree walks give scikit-learn's and LightGBM's own predictions, bit for bit."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from dope.models import ModelError, make_model
from dope.models.forest import RandomForestModel
from dope.models.forest_fast import ZERO_THRESHOLD, from_sklearn, sklearn_input
from dope.models.gbm import LightGbmModel, compile_booster
from tests.models_conformance import sample_data


def boundary_rows(forest: RandomForestRegressor, n_features: int, seed: int = 1) -> np.ndarray:
    """Rows whose values sit on, just below and just above the trees' thresholds (float32 edge cases)."""
    rng = np.random.default_rng(seed)
    tree = forest.estimators_[0].tree_
    split = tree.children_left != -1
    rows = []
    for feature, threshold in zip(tree.feature[split], tree.threshold[split], strict=True):
        for value in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf),
                      float(np.float32(threshold)), float(np.nextafter(np.float32(threshold), np.float32(np.inf)))):
            row = rng.standard_normal(n_features) * 2
            row[feature] = value
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("params", [{"max_depth": 8}, {"max_depth": None, "min_samples_leaf": 1, "max_samples": 300}])
def test_forest_walk_equals_sklearn_predict(params: dict[str, object]) -> None:
    X, y = sample_data(n=1500, n_features=8)
    model = RandomForestModel.from_params(n_estimators=30, n_jobs=1, **params).fit(X, y)
    assert model.estimator is not None
    probe = np.vstack([sample_data(n=500, n_features=8, seed=5)[0] * 3, boundary_rows(model.estimator, 8)])
    expected = model.estimator.predict(probe)
    np.testing.assert_array_equal(model.predict_many(probe), expected)
    assert [model.predict_one(row) for row in probe[:50]] == list(expected[:50])


def test_sklearn_input_rounds_like_sklearn() -> None:
    """The walk sees float32-rounded values, so a value just above a threshold can still go left."""
    X, y = sample_data(n=300, n_features=3)
    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0, n_jobs=1).fit(X, y)
    trees = from_sklearn(forest.estimators_)
    x = boundary_rows(forest, 3)
    np.testing.assert_array_equal(trees.leaf_sum_many(sklearn_input(x)) / trees.n_trees, forest.predict(x))
    assert not np.array_equal(trees.leaf_sum_many(np.ascontiguousarray(x)) / 3, forest.predict(x))


def test_lightgbm_walk_equals_booster_predict_with_zeros_and_tiny_values() -> None:
    X, y = sample_data(n=3000, n_features=6)
    X[:, 2] = np.abs(X[:, 2])
    X[::3, 2] = 0.0
    y = y + (X[:, 2] == 0)
    model = LightGbmModel.from_params(n_estimators=60, num_leaves=15, min_child_samples=20).fit(X, y)
    assert model.booster is not None
    assert (model._flat().threshold == ZERO_THRESHOLD).any(), "a split at LightGBM's zero boundary"
    probe = sample_data(n=1000, n_features=6, seed=9)[0]
    probe[::2, 2] = 0.0
    probe[1::4, 2] = 1e-40  # LightGBM reads |x| <= 1e-35 as zero
    probe[3::4, 2] = -1e-36
    probe[::7, 2] = 2e-35  # just above the zero boundary
    np.testing.assert_array_equal(model.predict_many(probe), model.booster.predict(probe))
    assert model.predict_one(probe[1]) == model.booster.predict(probe[1:2])[0]


@pytest.mark.parametrize("extra", [{}, {"zero_as_missing": True}])
def test_lightgbm_walk_follows_missing_value_rules(extra: dict[str, object]) -> None:
    """Boosters trained on data with NaN (missing type NaN) or zero-as-missing (type Zero)."""
    X, y = sample_data(n=3000, n_features=5)
    X[::4, 1] = np.nan
    X[1::5, 3] = 0.0
    y = y + np.where(np.isnan(X[:, 1]), 1.0, 0.0)
    booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1, "deterministic": True,
                         "num_threads": 1, "min_data_in_leaf": 20, **extra}, lgb.Dataset(X, y), num_boost_round=40)
    trees = compile_booster(booster)
    assert set(np.unique(trees.missing)) - {0}, "the booster should hold NaN/Zero missing rules"
    probe = sample_data(n=800, n_features=5, seed=3)[0]
    probe[::3, 1] = np.nan
    probe[1::3, 3] = 0.0
    probe[2::6, 0] = np.nan  # NaN where training had none: read as zero
    np.testing.assert_array_equal(trees.leaf_sum_many(probe), booster.predict(probe))


def test_lightgbm_categorical_splits_are_refused() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 2000), rng.standard_normal(2000)]).astype(float)
    y = (X[:, 0] == 3) * 1.0 + rng.standard_normal(2000) * 0.1
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X, y, categorical_feature=[0]), num_boost_round=5)
    with pytest.raises(ModelError, match="categorical"):
        compile_booster(booster)


def test_lightgbm_objective_with_a_transform_is_refused() -> None:
    with pytest.raises(ModelError, match="objective 'poisson'"):
        make_model("lightgbm", objective="poisson")
