"""LSTM (TensorFlow / Keras 3) on sequences of ``lookback`` feature vectors.

``LSTM(units) -> Dense(1)`` trained on standardised inputs and a standardised target (means and
standard deviations from the training rows, stored in ``scaler.json`` beside the Keras model
``lstm.keras``). Fitting is seeded (``keras.utils.set_random_seed``) with deterministic ops, so two fits
give the same weights. ``max_sequences`` caps the windows trained on (a seeded random sample), which
keeps a year of 10-second bars inside minutes.

Predictions, one window or many, run the forward pass in numba (:mod:`dope.models.lstm_fast`) from
the Keras weights: equal to Keras' own output to float32 rounding, and one window in tens of
microseconds. TensorFlow is imported only here, and only when an LSTM is built or loaded.
TensorFlow's thread counts can be set only once per process: the first LSTM fitted or loaded sets
them from ``threads``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dope.models.base import BaseModel, ModelError
from dope.models.lstm_fast import LstmWeights
from dope.types import FloatArray

KERAS_FILE = "lstm.keras"
SCALER_FILE = "scaler.json"


@dataclass(frozen=True)
class LstmParams:
    """Network and training settings."""

    lookback: int = 16
    units: int = 32
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 1e-3
    max_sequences: int | None = 200_000
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.lookback < 1 or self.units < 1 or self.epochs < 1:
            raise ModelError(f"lookback, units and epochs must be >= 1, got {self}")


@dataclass(frozen=True)
class Scaler:
    """Per-feature mean and standard deviation of the inputs; mean and deviation of the target."""

    x_mean: FloatArray
    x_std: FloatArray
    y_mean: float
    y_std: float

    @classmethod
    def fitted(cls, X: FloatArray, y: FloatArray) -> Scaler:
        x_std = X.std(axis=0)
        y_std = float(y.std())
        return cls(X.mean(axis=0), np.where(x_std > 0, x_std, 1.0), float(y.mean()), y_std if y_std > 0 else 1.0)

    def inputs(self, X: FloatArray) -> FloatArray:
        """Standardised inputs, rounded to float32 as the network sees them (widened back exactly)."""
        return ((X - self.x_mean) / self.x_std).astype(np.float32).astype(np.float64)

    def to_json(self) -> str:
        return json.dumps({"x_mean": self.x_mean.tolist(), "x_std": self.x_std.tolist(),
                           "y_mean": self.y_mean, "y_std": self.y_std}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        raw = json.loads(text)
        return cls(np.asarray(raw["x_mean"], dtype=np.float64), np.asarray(raw["x_std"], dtype=np.float64),
                   float(raw["y_mean"]), float(raw["y_std"]))


class LstmModel(BaseModel[LstmParams]):
    """``kind = "lstm"``; lookback = ``params.lookback``."""

    kind = "lstm"
    params_type = LstmParams
    libraries = ("tensorflow", "keras", "numba")

    def __init__(self, params: LstmParams) -> None:
        super().__init__(params)
        self.lookback = params.lookback
        self.network: Any = None  # the keras.Model
        self.scaler: Scaler | None = None
        self._weights: LstmWeights | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        keras = _keras(self.params.threads)
        p = self.params
        self.scaler = Scaler.fitted(X, y)
        ends = window_ends(len(X), p.lookback, p.max_sequences, p.seed)
        windows = windows_at(self.scaler.inputs(X), ends, p.lookback).astype(np.float32)
        target = ((y[ends] - self.scaler.y_mean) / self.scaler.y_std).astype(np.float32)
        keras.utils.set_random_seed(p.seed)
        network = build_network(keras, p, X.shape[1])
        network.fit(windows, target, epochs=p.epochs, batch_size=p.batch_size, shuffle=True, verbose=0)
        self._use(network)

    def _use(self, network: Any) -> None:
        self.network = network
        lstm, dense = network.layers[-2], network.layers[-1]
        with _keras_quiet():
            self._weights = LstmWeights.from_arrays(*lstm.get_weights(), *dense.get_weights())

    def _ready(self) -> tuple[Scaler, LstmWeights]:
        if self.scaler is None or self._weights is None:
            raise ModelError("the LSTM has no weights: fit or load it first")
        return self.scaler, self._weights

    def _predict_many(self, X: FloatArray) -> FloatArray:
        scaler, weights = self._ready()
        result: FloatArray = weights.run_many(scaler.inputs(X), self.lookback) * scaler.y_std + scaler.y_mean
        return result

    def _predict_one(self, window: FloatArray) -> float:
        scaler, weights = self._ready()
        return weights.run_one(scaler.inputs(window)) * scaler.y_std + scaler.y_mean

    def keras_predict(self, X: FloatArray) -> FloatArray:
        """The same predictions through Keras itself (``model(x)``): the reference the fast path is tested on."""
        scaler, _ = self._ready()
        ends = np.arange(self.lookback - 1, len(X))
        windows = windows_at(scaler.inputs(check_rows(X, self.lookback)), ends, self.lookback)
        out = np.full(len(X), np.nan)
        out[ends] = np.asarray(self.network(windows.astype(np.float32), training=False)).reshape(-1)
        result: FloatArray = out * scaler.y_std + scaler.y_mean
        return result

    def _save_state(self, directory: Path) -> None:
        scaler, _ = self._ready()
        with _keras_quiet():
            self.network.save(directory / KERAS_FILE)
        (directory / SCALER_FILE).write_text(scaler.to_json())

    def _load_state(self, directory: Path) -> None:
        keras = _keras(self.params.threads)
        path = directory / KERAS_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        try:
            network = keras.saving.load_model(path, compile=False, safe_mode=True)
            self.scaler = Scaler.from_json((directory / SCALER_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{directory} does not hold a readable LSTM: {exc}") from exc
        check_network(network, self.params, self.n_features)
        self._use(network)


def check_rows(X: FloatArray, lookback: int) -> FloatArray:
    """``X`` if it has at least one full window."""
    if len(X) < lookback:
        raise ModelError(f"need at least {lookback} rows (the lookback), got {len(X)}")
    return X


def window_ends(n_rows: int, lookback: int, max_sequences: int | None, seed: int) -> npt.NDArray[np.int64]:
    """Rows whose window is trained on: all full windows, or a seeded sorted sample of ``max_sequences``."""
    ends = np.arange(lookback - 1, n_rows, dtype=np.int64)
    if max_sequences is not None and ends.size > max_sequences:
        chosen = np.random.default_rng(seed).choice(ends.size, size=max_sequences, replace=False)
        ends = ends[np.sort(chosen)]
    return ends


def windows_at(X: FloatArray, ends: npt.NDArray[np.int64], lookback: int) -> FloatArray:
    """``(len(ends), lookback, f)``: the rows ``end - lookback + 1 .. end`` for every end."""
    steps = np.arange(-lookback + 1, 1, dtype=np.int64)
    result: FloatArray = X[ends[:, None] + steps[None, :]]
    return result


def build_network(keras: Any, p: LstmParams, n_features: int) -> Any:
    """``Input -> LSTM(units) -> Dense(1)``, compiled with Adam and squared error."""
    network = keras.Sequential([keras.Input((p.lookback, n_features)), keras.layers.LSTM(p.units),
                                keras.layers.Dense(1)])
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=p.learning_rate), loss="mse")
    return network


def check_network(network: Any, p: LstmParams, n_features: int | None) -> None:
    """Refuse a Keras file whose network is not the one ``model.json`` describes."""
    kinds = [type(layer).__name__ for layer in network.layers]
    shape = tuple(network.inputs[0].shape[1:]) if network.inputs else None
    if kinds != ["LSTM", "Dense"] or shape != (p.lookback, n_features) or network.layers[0].units != p.units:
        raise ModelError(f"the Keras file holds layers {kinds} with input {shape}, not the LSTM({p.units}) on "
                         f"({p.lookback}, {n_features}) its model.json describes")


@contextmanager
def _keras_quiet() -> Iterator[None]:
    """Hide Keras' own numpy-2 ``copy=`` deprecation notice (raised inside Keras, not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"keras\.")
        yield


_CONFIGURED: list[int] = []


def _keras(threads: int) -> Any:
    """Keras, with TensorFlow quiet, deterministic and on ``threads`` threads (set once per process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import tensorflow as tf

    if not _CONFIGURED:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started: its threads stay as they are
            pass
        tf.config.experimental.enable_op_determinism()
        _CONFIGURED.append(threads)
    return keras
