"""Random forest (scikit-learn ``RandomForestRegressor``) with a compiled single-row path.

Predictions, one row or many, go through :mod:`dope.models.forest_fast`'s walk of the fitted
trees, which gives exactly ``RandomForestRegressor.predict``'s numbers (tested bit for bit) in
microseconds instead of milliseconds. Saved with skops (``forest.skops``), never pickle, and as the
flattened trees (``trees.npz``): a model service loads only those, so a restarted service serves
without importing scikit-learn or skops (about 1.8 s of a restart on a 2-core machine).

``max_samples`` (rows each tree's bootstrap draws) is the way to fit on millions of rows: every
tree then grows on its own sample of that size, and all rows still get used across the forest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from dope.models.base import BaseModel, ModelError, load_arrays, save_arrays, skops_dump, skops_load
from dope.models.forest_fast import FlatTrees, from_sklearn, sklearn_input
from dope.types import FloatArray

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestRegressor

FOREST_FILE = "forest.skops"
TREES_FILE = "trees.npz"
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
        self._saved_in: Path | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        from sklearn.ensemble import RandomForestRegressor

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
        skops_dump(self.fitted_estimator(), directory / FOREST_FILE)
        save_arrays(directory / TREES_FILE, asdict(self._flat()))

    def _load_state(self, directory: Path) -> None:
        self._saved_in = directory
        if (directory / TREES_FILE).exists():
            self._trees = FlatTrees(**load_arrays(directory / TREES_FILE, [f.name for f in fields(FlatTrees)]))
        else:  # saved before the trees were
            self._use(self._read_estimator(directory))

    def fitted_estimator(self) -> RandomForestRegressor:
        """The scikit-learn forest (read from the saved model on first use after a load)."""
        if self.estimator is None:
            if self._saved_in is None:
                raise ModelError("the random forest has no trees: fit or load it first")
            self.estimator = self._read_estimator(self._saved_in)
        return self.estimator

    @staticmethod
    def _read_estimator(directory: Path) -> RandomForestRegressor:
        from sklearn.ensemble import RandomForestRegressor

        estimator = skops_load(directory / FOREST_FILE, TRUSTED_TYPES)
        if not isinstance(estimator, RandomForestRegressor):
            raise ModelError(f"{directory / FOREST_FILE} holds a {type(estimator).__name__}, not a forest")
        return estimator
