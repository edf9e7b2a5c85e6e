"""Baselines every model must beat: zero return, momentum/persistence, ridge regression.

* ``zero`` predicts a zero forward return: the random walk, the bar every model must beat.
* ``momentum`` predicts ``coef * X[:, column]``: the configured feature (by default column 0, which
  the default feature set makes the latest one-bar log return) times a coefficient. With
  ``fit=True`` (default) the coefficient is the least-squares slope through the origin on the
  training rows (negative when returns mean-revert); with ``fit=False`` it is ``coef`` as given
  (``coef=1`` is pure persistence: "the last return repeats").
* ``ridge`` is scikit-learn's ``Ridge`` on standardised features (a ``StandardScaler`` + ``Ridge``
  pipeline, saved with skops, and its four arrays in ``ridge.npz``: a model service serves from those
  without importing scikit-learn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dope.models.base import BaseModel, ModelError, load_arrays, save_arrays, skops_dump, skops_load
from dope.types import FloatArray

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

STATE_FILE = "state.json"
RIDGE_FILE = "ridge.skops"
RIDGE_ARRAYS = "ridge.npz"
RIDGE_TERMS = ("mean", "scale", "coef", "intercept")
"""What a prediction needs: ``(x - mean) / scale``, then ``coef`` and ``intercept``."""


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
        self.terms: dict[str, FloatArray] = {}
        """:data:`RIDGE_TERMS` of the fitted pipeline: all a prediction reads."""
        self._saved_in: Path | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self._use(make_pipeline(StandardScaler(), Ridge(alpha=self.params.alpha)).fit(X, y))

    def _use(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        scaler, ridge = pipeline[0], pipeline[-1]
        values = (scaler.mean_, scaler.scale_, ridge.coef_, [float(ridge.intercept_)])
        self.terms = {name: np.asarray(v, dtype=np.float64) for name, v in zip(RIDGE_TERMS, values, strict=True)}

    def _predict_many(self, X: FloatArray) -> FloatArray:
        """The pipeline's prediction, summed term by term so a row's value never depends on the batch.

        The scaling is the scaler's own arithmetic (``(x - mean_) / scale_``) done here: scikit-learn's
        ``transform`` validates its input first, which took ~150 us of a single prediction's ~160."""
        if not self.terms:
            raise ModelError("the ridge model is not fitted: fit or load it first")
        z = (X - self.terms["mean"]) / self.terms["scale"]
        out = np.zeros(X.shape[0])
        for k, weight in enumerate(self.terms["coef"]):
            out += z[:, k] * weight
        result: FloatArray = out + float(self.terms["intercept"][0])
        return result

    def _save_state(self, directory: Path) -> None:
        skops_dump(self.fitted_pipeline(), directory / RIDGE_FILE)
        save_arrays(directory / RIDGE_ARRAYS, self.terms)

    def _load_state(self, directory: Path) -> None:
        self._saved_in = directory
        if (directory / RIDGE_ARRAYS).exists():
            self.terms = {k: v.astype(np.float64) for k, v in load_arrays(directory / RIDGE_ARRAYS,
                                                                          RIDGE_TERMS).items()}
        else:  # saved before the arrays were
            self._use(self._read_pipeline(directory))

    def fitted_pipeline(self) -> Pipeline:
        """The scikit-learn pipeline (read from the saved model on first use after a load)."""
        if self.pipeline is None:
            if self._saved_in is None:
                raise ModelError("the ridge model is not fitted: fit or load it first")
            self.pipeline = self._read_pipeline(self._saved_in)
        return self.pipeline

    @staticmethod
    def _read_pipeline(directory: Path) -> Pipeline:
        from sklearn.pipeline import Pipeline

        pipeline = skops_load(directory / RIDGE_FILE, ())
        if not isinstance(pipeline, Pipeline):
            raise ModelError(f"{directory / RIDGE_FILE} holds a {type(pipeline).__name__}, not a ridge pipeline")
        return pipeline
