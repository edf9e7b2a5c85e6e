"""Random forest (scikit-learn ``RandomForestRegressor``) with a compiled single-row path.

Predictions, one row or many, go through :mod:`dope.models.forest_fast`'s walk of the fitted
trees, which gives exactly ``RandomForestRegressor.predict``'s numbers (tested bit for bit) in
microseconds instead of milliseconds. Saved with skops (``forest.skops``), never pickle.

``max_samples`` (rows each tree's bootstrap draws) is the way to fit on millions of rows: every
tree then grows on its own sample of that size, and all rows still get used across the forest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sklearn.ensemble import RandomForestRegressor

from dope.models.base import BaseModel, ModelError, skops_dump, skops_load
from dope.models.forest_fast import FlatTrees, from_sklearn, sklearn_input
from dope.types import FloatArray

FOREST_FILE = "forest.skops"
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)  # beyond skops' own trusted scikit-learn/numpy types


@dataclass(frozen=True)
class ForestParams:
    """Forest settings; ``n_jobs`` only affects fitting (prediction is the compiled walk)."""

    n_estimators: int = 100
    max_depth: int | None = 10
    min_samples_leaf: int = 20
    max_features: float = 0.5
    max_samples: int | float | None = None
    seed: int = 0
    n_jobs: int = 1


class RandomForestModel(BaseModel[ForestParams]):
    """``kind = "random_forest"``; tabular (lookback 1)."""

    kind = "random_forest"
    params_type = ForestParams
    libraries = ("scikit-learn", "skops", "numba")

    def __init__(self, params: ForestParams) -> None:
        super().__init__(params)
        self.estimator: RandomForestRegressor | None = None
        self._trees: FlatTrees | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        p = self.params
        estimator = RandomForestRegressor(
            n_estimators=p.n_estimators, max_depth=p.max_depth, min_samples_leaf=p.min_samples_leaf,
            max_features=p.max_features, max_samples=p.max_samples, random_state=p.seed, n_jobs=p.n_jobs)
        self._use(estimator.fit(X, y))

    def _use(self, estimator: RandomForestRegressor) -> None:
        self.estimator = estimator
        self._trees = from_sklearn(estimator.estimators_)

    def _predict_many(self, X: FloatArray) -> FloatArray:
        trees = self._flat()
        result: FloatArray = trees.leaf_sum_many(sklearn_input(X)) / trees.n_trees
        return result

    def _predict_one(self, window: FloatArray) -> float:
        trees = self._flat()
        return trees.leaf_sum_one(sklearn_input(window[-1])) / trees.n_trees

    def _flat(self) -> FlatTrees:
        if self._trees is None:
            raise ModelError("the random forest has no trees: fit or load it first")
        return self._trees

    def _save_state(self, directory: Path) -> None:
        skops_dump(self.estimator, directory / FOREST_FILE)

    def _load_state(self, directory: Path) -> None:
        estimator = skops_load(directory / FOREST_FILE, TRUSTED_TYPES)
        if not isinstance(estimator, RandomForestRegressor):
            raise ModelError(f"{directory / FOREST_FILE} holds a {type(estimator).__name__}, not a forest")
        self._use(estimator)
