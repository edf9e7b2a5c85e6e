"""``hist_gbm``: scikit-learn's ``HistGradientBoostingRegressor`` as a DOPE model.

Fitting uses scikit-learn; the fitted trees are then copied into flat arrays (``trees.npz``, read with
``allow_pickle=False``: nothing is unpickled) and every prediction walks them with one compiled loop,
adding the trees' leaves to the baseline in scikit-learn's order, so ``predict_one`` is the library's
prediction in a few microseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from dope.plugins import BaseModel, FloatArray, ModelError

TREES_FILE = "trees.npz"
_COLUMNS = ("value", "feature_idx", "num_threshold", "left", "right", "is_leaf")


@dataclass(frozen=True)
class HistGbmParams:
    """A few of the regressor's parameters (early stopping off: a fit is deterministic)."""

    max_iter: int = 100
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    l2_regularization: float = 0.0
    seed: int = 0


@numba.njit(cache=True, nogil=True)
def _predict_rows(X, baseline, starts, feature, threshold, left, right, leaf, value):  # type: ignore[no-untyped-def]  # pragma: no cover
    out = np.empty(X.shape[0])
    for r in range(X.shape[0]):
        total = baseline
        for t in range(starts.shape[0]):
            node = starts[t]
            while not leaf[node]:
                node = starts[t] + (left[node] if X[r, feature[node]] <= threshold[node] else right[node])
            total += value[node]
        out[r] = total
    return out


class HistGbmModel(BaseModel[HistGbmParams]):
    """``kind = "hist_gbm"``: gradient-boosted trees on histograms."""

    kind = "hist_gbm"
    params_type = HistGbmParams
    libraries = ("scikit-learn", "numba")

    def __init__(self, params: HistGbmParams) -> None:
        super().__init__(params)
        self.baseline = 0.0
        self.trees: dict[str, np.ndarray] = {}

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        p = self.params
        regressor = HistGradientBoostingRegressor(
            max_iter=p.max_iter, learning_rate=p.learning_rate, max_leaf_nodes=p.max_leaf_nodes,
            min_samples_leaf=p.min_samples_leaf, l2_regularization=p.l2_regularization,
            early_stopping=False, random_state=p.seed).fit(X, y)
        nodes = [predictors[0].nodes for predictors in regressor._predictors]
        starts = np.cumsum([0] + [len(n) for n in nodes[:-1]]).astype(np.int64)
        flat = np.concatenate(nodes)
        self.trees = {"starts": starts, **{c: np.ascontiguousarray(flat[c]) for c in _COLUMNS}}
        self.trees["is_leaf"] = self.trees["is_leaf"].astype(np.bool_)
        self.baseline = float(np.ravel(regressor._baseline_prediction)[0])

    def _predict_many(self, X: FloatArray) -> FloatArray:
        t = self.trees
        result: FloatArray = _predict_rows(np.ascontiguousarray(X), self.baseline, t["starts"], t["feature_idx"],
                                           t["num_threshold"], t["left"], t["right"], t["is_leaf"], t["value"])
        return result

    def _save_state(self, directory: Path) -> None:
        np.savez(directory / TREES_FILE, **self.trees)  # type: ignore[arg-type]
        (directory / "baseline.json").write_text(json.dumps({"baseline": self.baseline}) + "\n")

    def _load_state(self, directory: Path) -> None:
        try:
            with np.load(directory / TREES_FILE, allow_pickle=False) as data:
                self.trees = {name: data[name] for name in ("starts", *_COLUMNS)}
            self.baseline = float(json.loads((directory / "baseline.json").read_text())["baseline"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory} does not hold hist_gbm trees: {exc}") from exc
