"""``kind = "online_ridge"``: a linear model that learns from every labelled bar (``learn_one``), live.

Each row is standardised with the running means and variances of every row learned so far (Welford),
then the model is the exact ridge regression (penalty ``alpha``, intercept included) on the past labels
weighted ``forgetting ** age``: it follows a market whose dynamics change, with a memory of about
``1 / (1 - forgetting)`` labels. Per label: ``A = forgetting * A + z z' + (1 - forgetting) * alpha * I``,
``b = forgetting * b + z y``, ``weights = solve(A, b)`` (the penalty stays ``alpha`` however long it runs,
unlike the textbook recursive least squares whose prior fades and whose gain winds up).

``fit(X, y)`` is the warm start: it learns the rows one by one in order, so a fitted model and one that
learned the same rows online hold the same state, bit for bit. ``predict_many`` and ``predict_one`` use
the current state only (a pure function of it, like every model); what the model service does live,
learning each label once ``horizon`` bars have passed, is :func:`dope.rendezvous.online.replay`.

The state is saved as JSON (floats written with ``repr``, so a round trip is exact; never pickle),
checksummed in ``model.json`` like every model.

>>> import numpy as np
>>> model = OnlineRidgeModel.from_params().fit(np.arange(8.0).reshape(4, 2), np.arange(4.0))
>>> before = model.predict_one(np.array([1.0, 2.0]))
>>> model.learn_one(np.array([1.0, 2.0]), 5.0)
>>> model.predict_one(np.array([1.0, 2.0])) > before
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg.lapack import dposv

from dope.models.base import BaseModel, ModelError
from dope.types import FloatArray

STATE_FILE = "online_state.json"
MIN_STD = 1e-12


@dataclass(frozen=True)
class OnlineRidgeParams:
    """``forgetting``: weight of the past per label, in (0, 1]; ``alpha``: the ridge penalty (against about
    ``1 / (1 - forgetting)`` = 200 effective rows of standardised features: 100 shrinks noisy returns' weights by
    about a third)."""

    forgetting: float = 0.995
    alpha: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 < self.forgetting <= 1.0:
            raise ModelError(f"online_ridge forgetting must be in (0, 1], got {self.forgetting}")
        if not self.alpha > 0.0:
            raise ModelError(f"online_ridge alpha must be > 0, got {self.alpha}")


class OnlineRidgeModel(BaseModel[OnlineRidgeParams]):
    """Running standardisation + recursive least squares with forgetting; ``learn_one`` per label."""

    kind = "online_ridge"
    params_type = OnlineRidgeParams

    def __init__(self, params: OnlineRidgeParams) -> None:
        super().__init__(params)
        self.learned = 0
        self.mean = np.zeros(0)
        self.m2 = np.zeros(0)  # sums of squared deviations from the mean (Welford)
        self.std = np.zeros(0)
        self.info = np.zeros((0, 0))  # A: discounted z z' plus the penalty
        self.moment = np.zeros(0)  # b: discounted z y
        self.weights = np.zeros(0)  # [intercept, one per feature], on the standardised features
        self._penalty_cache = np.zeros((0, 0))

    def learn_one(self, x: FloatArray, y: float) -> None:
        """Learn one labelled row (``(f,)``, or a ``(1, f)`` window); an unfitted model starts from it."""
        row = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.n_features is None:
            self._reset(row.shape[0])
            self.n_features = row.shape[0]
        if row.shape[0] != self.n_features:
            raise ModelError(f"learn_one: x has {row.shape[0]} features, the model reads {self.n_features}")
        if not (np.isfinite(row).all() and math.isfinite(y)):
            raise ModelError(f"learn_one: x and y must be finite, got y={y} and x with non-finite values")
        self._learn(row, float(y))

    def _reset(self, n_features: int) -> None:
        self.learned = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.std = np.ones(n_features)
        self.info = self.params.alpha * np.eye(n_features + 1)
        self.moment = np.zeros(n_features + 1)
        self.weights = np.zeros(n_features + 1)

    @property
    def _penalty(self) -> FloatArray:
        """``(1 - forgetting) * alpha * I``: what keeps the discounted penalty at ``alpha`` (cached)."""
        size = self.info.shape[0]
        if self._penalty_cache.shape != (size, size):
            self._penalty_cache = (1.0 - self.params.forgetting) * self.params.alpha * np.eye(size)
        return self._penalty_cache

    def _learn(self, row: FloatArray, y: float) -> None:
        lam = self.params.forgetting
        self.learned += 1
        delta = row - self.mean
        self.mean = self.mean + delta / self.learned
        self.m2 = self.m2 + delta * (row - self.mean)
        self.std = _std(self.m2 / self.learned)
        z = self._design(row.reshape(1, -1))[0]
        self.info = lam * self.info + np.outer(z, z) + self._penalty
        self.moment = lam * self.moment + z * y
        _, weights, failed = dposv(self.info, self.moment)  # Cholesky solve: A is symmetric positive definite
        if failed:
            raise ModelError(f"online_ridge: the system is not positive definite (LAPACK dposv info {failed})")
        self.weights = np.asarray(weights, dtype=np.float64)

    def _design(self, X: FloatArray) -> FloatArray:
        """``[1, (x - mean) / std]`` per row."""
        z = np.empty((X.shape[0], X.shape[1] + 1))
        z[:, 0] = 1.0
        np.divide(X - self.mean, self.std, out=z[:, 1:])
        return z

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        self._reset(X.shape[1])
        for row, target in zip(X, y, strict=True):
            self._learn(row, float(target))

    def _predict_many(self, X: FloatArray) -> FloatArray:
        """Summed term by term, so a row's value never depends on the batch (predict_one == predict_many)."""
        z = self._design(X)
        out = np.zeros(X.shape[0])
        for k, weight in enumerate(self.weights):
            out += z[:, k] * weight
        return out

    def _predict_one(self, window: FloatArray) -> float:
        """The same products summed in the same order as :meth:`_predict_many`, on Python floats (faster for one
        row, and equal to it bit for bit: neither fuses a multiply and an add)."""
        total = 0.0
        for z, weight in zip(self._design(window).tolist()[0], self.weights.tolist(), strict=True):
            total += z * weight
        return total

    def _save_state(self, directory: Path) -> None:
        state = {"learned": self.learned, "mean": self.mean.tolist(), "m2": self.m2.tolist(),
                 "info": self.info.tolist(), "moment": self.moment.tolist(), "weights": self.weights.tolist()}
        (directory / STATE_FILE).write_text(json.dumps(state) + "\n")

    def _load_state(self, directory: Path) -> None:
        path = directory / STATE_FILE
        try:
            state: dict[str, Any] = json.loads(path.read_text())
            learned, mean, m2 = int(state["learned"]), _floats(state["mean"]), _floats(state["m2"])
            info, moment, weights = _floats(state["info"]), _floats(state["moment"]), _floats(state["weights"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path} is not an online_ridge state: {exc}") from exc
        f = self._fitted_features()
        shapes = (mean.shape, m2.shape, info.shape, moment.shape, weights.shape)
        if learned < 1 or shapes != ((f,), (f,), (f + 1, f + 1), (f + 1,), (f + 1,)):
            raise ModelError(f"{path} holds arrays of the wrong shapes for {f} features")
        self.learned, self.mean, self.m2, self.info, self.moment, self.weights = learned, mean, m2, info, moment, weights
        self.std = _std(m2 / learned)


def _std(var: FloatArray) -> FloatArray:
    """Standard deviations, 1 where a feature never varied (it is centred only)."""
    std = np.sqrt(var)
    return np.where(std > MIN_STD, std, 1.0)


def _floats(value: Any) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("non-finite value in the state")
    return arr
