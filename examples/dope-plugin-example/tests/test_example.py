"""The example plugin: its model passes DOPE's conformance suite, its feature is the same online and offline."""

from __future__ import annotations

import numpy as np
from dope_plugin_example.feature import UP_SHARE_20
from dope_plugin_example.model import HistGbmModel

from dope.features import FeatureSet, default_feature_set
from dope.features.parity import feature_parity
from dope.training.conformance import run_suite, sample_data

KIND = "dope_plugin_example.model:HistGbmModel"


def test_the_model_passes_the_conformance_suite() -> None:
    report = run_suite(KIND, {"max_iter": 20}, features=False, latency_budgets=False)
    assert report.passed, report.text()


def test_predictions_are_scikit_learns() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y = sample_data()
    model = HistGbmModel.from_params(max_iter=20).fit(X, y)
    reference = HistGradientBoostingRegressor(max_iter=20, learning_rate=0.05, max_leaf_nodes=15,
                                              min_samples_leaf=40, early_stopping=False, random_state=0).fit(X, y)
    np.testing.assert_allclose(model.predict_many(X), reference.predict(X), rtol=0, atol=1e-12)


def test_the_feature_is_the_same_online_and_offline() -> None:
    fs = FeatureSet("default", default_feature_set(10_000, plugins=()).params, (UP_SHARE_20,))
    passed, detail = feature_parity("up_share_20", fs)
    assert passed, detail
