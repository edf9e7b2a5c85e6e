"""Every model kind passes the shared conformance suite (tests/models_conformance.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dope.models import MODEL_KINDS, Model, make_model
from tests import models_conformance as conformance

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

SMALL: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 10, "max_depth": 5, "min_samples_leaf": 5, "n_jobs": 1},
    "lightgbm": {"n_estimators": 25, "num_leaves": 7, "min_child_samples": 10, "num_threads": 1},
    "lstm": {"lookback": 5, "units": 4, "epochs": 1, "batch_size": 64},
    "zero": {},
    "momentum": {"column": 0},
    "ridge": {"alpha": 0.5},
    "online_ridge": {"forgetting": 0.99},
}


def test_every_kind_is_covered() -> None:
    assert set(SMALL) == set(MODEL_KINDS)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_conformance(kind: str, tmp_path: Path) -> None:
    def factory() -> Model:
        return make_model(kind, **SMALL[kind])

    X, y = conformance.sample_data()
    conformance.check_model(factory, X, y, tmp_path / kind)


def test_a_broken_model_fails_the_suite(tmp_path: Path) -> None:
    """The suite catches look-ahead: a model that peeks at the next row fails it."""
    from dope.models.baselines import MomentumModel

    class Peeking(MomentumModel):
        def _predict_many(self, X: Any) -> Any:
            out = super()._predict_many(X)
            out[:-1] += 1e-3 * X[1:, 0]
            return out

    X, y = conformance.sample_data(n=100)
    with pytest.raises(AssertionError):
        conformance.check_no_look_ahead(Peeking.from_params().fit(X, y), X)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "lightgbm"])
def test_dope_models_check_passes_on_the_slower_kinds(kind: str) -> None:
    """``dope models check``'s suite (corrupt artifact, feature version, latency timed) on the slower kinds."""
    from dope.training.conformance import run_suite

    report = run_suite(kind, features=False, latency_budgets=False)
    assert report.passed, report.text()
