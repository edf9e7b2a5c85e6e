"""Baselines every model must beat: zero return, momentum/persistence, ridge regression.

* ``zero`` predicts a zero forward return: the random walk, the bar every model must beat.
* ``momentum`` predicts ``coef * X[:, column]``: the configured feature (by default column 0, which
  the default feature set makes the latest one-bar log return) times a coefficient. With
  ``fit=True`` (default) the coefficient is the least-squares slope through the origin on the
  training rows (negative when returns mean-revert); with ``fit=False`` it is ``coef`` as given
  (``coef=1`` is pure persistence: "the last return repeats").
* ``ridge`` is scikit-learn's ``Ridge`` on standardised features (a ``StandardScaler`` + ``Ridge``
  pipeline, saved with skops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from dope.models.base import BaseModel, ModelError, skops_dump, skops_load
from dope.types import FloatArray

STATE_FILE = "state.json"
RIDGE_FILE = "ridge.skops"


@dataclass(frozen=True)
class ZeroParams:
    """The zero model has no parameters."""


class ZeroModel(BaseModel[ZeroParams]):
    """``kind = "zero"``: always 0.0."""

    kind = "zero"
    params_type = ZeroParams

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        return None

    def _predict_many(self, X: FloatArray) -> FloatArray:
        return np.zeros(X.shape[0])

    def _predict_one(self, window: FloatArray) -> float:
        return 0.0

    def _save_state(self, directory: Path) -> None:
        return None

    def _load_state(self, directory: Path) -> None:
        return None


@dataclass(frozen=True)
class MomentumParams:
    """``column``: feature index used; ``fit``: fit the slope, else use ``coef``."""

    column: int = 0
    fit: bool = True
    coef: float = 1.0


class MomentumModel(BaseModel[MomentumParams]):
    """``kind = "momentum"``: ``coef * X[:, column]``."""

    kind = "momentum"
    params_type = MomentumParams

    def __init__(self, params: MomentumParams) -> None:
        super().__init__(params)
        self.coef = params.coef

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        x = self._column(X)
        if self.params.fit:
            denominator = float(x @ x)
            self.coef = float(x @ y) / denominator if denominator > 0 else 0.0

    def _column(self, X: FloatArray) -> FloatArray:
        if not 0 <= self.params.column < X.shape[1]:
            raise ModelError(f"momentum column {self.params.column} is outside the {X.shape[1]} features")
        column: FloatArray = X[:, self.params.column]
        return column

    def _predict_many(self, X: FloatArray) -> FloatArray:
        result: FloatArray = self.coef * self._column(X)
        return result

    def _predict_one(self, window: FloatArray) -> float:
        return float(self.coef * window[-1, self.params.column])

    def _save_state(self, directory: Path) -> None:
        (directory / STATE_FILE).write_text(json.dumps({"coef": self.coef}) + "\n")

    def _load_state(self, directory: Path) -> None:
        path = directory / STATE_FILE
        try:
            self.coef = float(json.loads(path.read_text())["coef"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path} is not a momentum model state: {exc}") from exc


@dataclass(frozen=True)
class RidgeParams:
    """``alpha``: L2 penalty on the standardised features."""

    alpha: float = 1.0


class RidgeModel(BaseModel[RidgeParams]):
    """``kind = "ridge"``: standardise, then ridge regression."""

    kind = "ridge"
    params_type = RidgeParams
    libraries = ("scikit-learn", "skops")

    def __init__(self, params: RidgeParams) -> None:
        super().__init__(params)
        self.pipeline: Pipeline | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        self.pipeline = make_pipeline(StandardScaler(), Ridge(alpha=self.params.alpha)).fit(X, y)

    def _predict_many(self, X: FloatArray) -> FloatArray:
        """The pipeline's prediction, summed term by term so a row's value never depends on the batch.

        The scaling is the scaler's own arithmetic (``(x - mean_) / scale_``) done here: scikit-learn's
        ``transform`` validates its input first, which took ~150 us of a single prediction's ~160."""
        assert self.pipeline is not None
        scaler, ridge = self.pipeline[0], self.pipeline[-1]
        z = (X - scaler.mean_) / scaler.scale_
        out = np.zeros(X.shape[0])
        for k, weight in enumerate(np.asarray(ridge.coef_, dtype=np.float64)):
            out += z[:, k] * weight
        result: FloatArray = out + float(ridge.intercept_)
        return result

    def _save_state(self, directory: Path) -> None:
        skops_dump(self.pipeline, directory / RIDGE_FILE)

    def _load_state(self, directory: Path) -> None:
        pipeline = skops_load(directory / RIDGE_FILE, ())
        if not isinstance(pipeline, Pipeline):
            raise ModelError(f"{directory / RIDGE_FILE} holds a {type(pipeline).__name__}, not a ridge pipeline")
        self.pipeline = pipeline
