"""Model classes for the conformance suite's own tests, named as ``tests.unit.broken_models:Class``:
one that works, and three deliberately broken ones that ``dope models check`` must fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dope.models.baselines import MomentumModel, MomentumParams
from dope.types import FloatArray


class GoodMomentum(MomentumModel):
    """A correct plugin model: the built-in momentum model under a kind of its own."""

    kind = "good_momentum"
    params_type = MomentumParams


class PeekingModel(GoodMomentum):
    """Peeks at the future: each row's prediction adds a little of the next row's feature."""

    kind = "peeking"

    def _predict_many(self, X: FloatArray) -> FloatArray:
        out = super()._predict_many(X).copy()
        out[:-1] += 1e-3 * X[1:, 0]
        return out

    def _predict_one(self, window: FloatArray) -> float:
        return float(self._predict_many(window)[-1])


class DisagreeingModel(GoodMomentum):
    """Its fast single-prediction path is off by 1e-9 from ``predict_many``."""

    kind = "disagreeing"

    def _predict_one(self, window: FloatArray) -> float:
        return super()._predict_one(window) + 1e-9


class ForgetfulModel(GoodMomentum):
    """Saves nothing: a loaded model has lost its fitted coefficient."""

    kind = "forgetful"

    def _save_state(self, directory: Path) -> None:
        (directory / "nothing.txt").write_text("\n")

    def _load_state(self, directory: Path) -> None:
        self.coef = float(np.float64(self.params.coef))
