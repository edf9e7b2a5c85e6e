"""The LSTM's numba forward pass equals Keras' own output; its files load safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dope.models import ModelError, load_model
from dope.models.base import file_checksums
from dope.models.lstm import LstmModel, window_ends, windows_at
from tests.models_conformance import sample_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def rewrite_checksums(directory: Path) -> None:
    """Make model.json vouch for the files as they are now (a consistent but foreign artifact)."""
    info = json.loads((directory / "model.json").read_text())
    info["files"] = file_checksums(directory)
    (directory / "model.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def fitted() -> tuple[LstmModel, np.ndarray]:
    X, y = sample_data(n=600, n_features=5)
    model = LstmModel.from_params(lookback=8, units=12, epochs=2, batch_size=64).fit(X, y)
    return model, sample_data(n=300, n_features=5, seed=4)[0]


def test_fast_path_equals_keras(fitted: tuple[LstmModel, np.ndarray]) -> None:
    """To float32 rounding: 1e-6 of the network output's scale, before the target is unscaled."""
    model, X = fitted
    assert model.scaler is not None
    fast = (model.predict_many(X) - model.scaler.y_mean) / model.scaler.y_std
    keras = (model.keras_predict(X) - model.scaler.y_mean) / model.scaler.y_std
    assert np.isnan(fast[:7]).all() and np.isnan(keras[:7]).all()
    scale = np.max(np.abs(keras[7:]))
    assert scale > 1e-3, "a network that outputs (near) nothing would make the check vacuous"
    assert np.max(np.abs(fast[7:] - keras[7:])) <= 1e-6 * scale


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own, while saving the bad file
def test_a_keras_file_with_code_in_it_is_refused(fitted: tuple[LstmModel, np.ndarray], tmp_path: Path) -> None:
    """Keras' safe mode: a Lambda layer (arbitrary Python) is never deserialised."""
    import keras

    model, _ = fitted
    model.save(tmp_path)
    unsafe = keras.Sequential([keras.Input((8, 5)), keras.layers.Lambda(lambda x: x * 2.0),
                               keras.layers.LSTM(12), keras.layers.Dense(1)])
    unsafe.save(tmp_path / "lstm.keras")
    rewrite_checksums(tmp_path)
    with pytest.raises(ModelError, match="readable LSTM.*(?i:lambda|safe)"):
        load_model(tmp_path)


def test_window_sampling_is_seeded_and_bounded() -> None:
    ends = window_ends(1000, 10, 100, seed=3)
    assert ends.size == 100 and (np.diff(ends) > 0).all() and ends.min() >= 9
    np.testing.assert_array_equal(ends, window_ends(1000, 10, 100, seed=3))
    np.testing.assert_array_equal(window_ends(20, 10, None, 0), np.arange(9, 20))
    X = np.arange(20.0).reshape(10, 2)
    np.testing.assert_array_equal(windows_at(X, np.array([2, 9]), 3)[1], X[7:10])


def test_loading_a_different_network_is_refused(fitted: tuple[LstmModel, np.ndarray], tmp_path: Path) -> None:
    model, _ = fitted
    model.save(tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    info["params"]["units"] = 99
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="not the LSTM"):
        load_model(tmp_path)


def test_missing_keras_file_is_refused(fitted: tuple[LstmModel, np.ndarray], tmp_path: Path) -> None:
    model, _ = fitted
    model.save(tmp_path)
    (tmp_path / "lstm.keras").write_bytes(b"not a zip")
    rewrite_checksums(tmp_path)
    with pytest.raises(ModelError, match="readable LSTM"):
        load_model(tmp_path)
    (tmp_path / "lstm.keras").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(tmp_path)


def test_a_window_of_the_wrong_length_is_refused(fitted: tuple[LstmModel, np.ndarray]) -> None:
    model, X = fitted
    with pytest.raises(ModelError, match="8 rows"):
        model.predict_one(X[:5])
