"""``kind = "online_ridge"``: a linear model that learns from every labelled bar (``learn_one``), live.

Each row is standardised with exponentially weighted running means and variances, then a recursive
least squares (RLS) step with forgetting factor ``forgetting`` updates the weights (and an intercept):
the exact ridge solution of the discounted past, one ``O(f^2)`` step per label, so the model follows a
market whose dynamics change (memory about ``1 / (1 - forgetting)`` labels). ``alpha`` is the ridge
penalty of the prior (``P = I / alpha`` before the first label).

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

from dope.models.base import BaseModel, ModelError
from dope.types import FloatArray

STATE_FILE = "online_state.json"
MIN_STD = 1e-12


@dataclass(frozen=True)
class OnlineRidgeParams:
    """``forgetting``: weight of the past per label, in (0, 1]; ``alpha``: ridge penalty of the prior."""

    forgetting: float = 0.995
    alpha: float = 1.0

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
        self.var = np.zeros(0)
        self.std = np.zeros(0)
        self.weights = np.zeros(0)  # [intercept, one per feature], on the standardised features
        self.cov = np.zeros((0, 0))  # RLS inverse-information matrix P

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
        self.var = np.zeros(n_features)
        self.std = np.ones(n_features)
        self.weights = np.zeros(n_features + 1)
        self.cov = np.eye(n_features + 1) / self.params.alpha

    def _learn(self, row: FloatArray, y: float) -> None:
        lam = self.params.forgetting
        if self.learned == 0:
            self.mean = row.copy()
        else:  # exponentially weighted moments (West's update)
            delta = row - self.mean
            self.mean = self.mean + (1.0 - lam) * delta
            self.var = lam * (self.var + (1.0 - lam) * delta * delta)
        self.learned += 1
        self.std = _std(self.var)
        z = self._design(row.reshape(1, -1))[0]
        pz = self.cov @ z
        gain = pz / (lam + float(z @ pz))
        self.weights = self.weights + gain * (y - float(z @ self.weights))
        cov = (self.cov - np.outer(gain, pz)) / lam
        self.cov = (cov + cov.T) / 2.0

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
        state = {"learned": self.learned, "mean": self.mean.tolist(), "var": self.var.tolist(),
                 "weights": self.weights.tolist(), "cov": self.cov.tolist()}
        (directory / STATE_FILE).write_text(json.dumps(state) + "\n")

    def _load_state(self, directory: Path) -> None:
        path = directory / STATE_FILE
        try:
            state: dict[str, Any] = json.loads(path.read_text())
            learned, mean, var = int(state["learned"]), _floats(state["mean"]), _floats(state["var"])
            weights, cov = _floats(state["weights"]), _floats(state["cov"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path} is not an online_ridge state: {exc}") from exc
        f = self._fitted_features()
        if mean.shape != (f,) or var.shape != (f,) or weights.shape != (f + 1,) or cov.shape != (f + 1, f + 1):
            raise ModelError(f"{path} holds arrays of the wrong shapes for {f} features")
        self.learned, self.mean, self.var, self.weights, self.cov = learned, mean, var, weights, cov
        self.std = _std(var)


def _std(var: FloatArray) -> FloatArray:
    """Standard deviations, 1 where a feature never varied (it is centred only)."""
    std = np.sqrt(var)
    return np.where(std > MIN_STD, std, 1.0)


def _floats(value: Any) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("non-finite value in the state")
    return arr
