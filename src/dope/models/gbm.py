"""Gradient boosting (LightGBM, FreqAI's default learner) with a compiled single-row path.

Fitted deterministically (``deterministic=True``, row-wise histograms, fixed ``num_threads`` and
seeds). Saved in LightGBM's own text format (``booster.txt``). Predictions go through the dumped
trees (``Booster.dump_model()``) compiled into :mod:`dope.models.forest_fast`'s walker, which follows
LightGBM's rules (tiny inputs read as zero, per-node missing-value routing, leaf values summed in tree
order) and so gives ``Booster.predict``'s numbers (tested) for the regression objectives allowed here,
whose output is the raw score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from dope.models.base import BaseModel, ModelError
from dope.models.forest_fast import (
    LEAF,
    MISSING_NAN,
    MISSING_NONE,
    MISSING_ZERO,
    ZERO_THRESHOLD,
    FlatTrees,
    concat_trees,
)
from dope.types import FloatArray

BOOSTER_FILE = "booster.txt"
RAW_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile")  # identity output transform
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


@dataclass(frozen=True)
class GbmParams:
    """LightGBM settings (LightGBM's own names); ``num_threads`` only affects fitting."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = -1
    min_child_samples: int = 100
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 0.0
    objective: str = "regression"
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.objective not in RAW_OBJECTIVES:
            raise ModelError(f"LightGBM objective {self.objective!r} is not supported; use one of {RAW_OBJECTIVES}")


class LightGbmModel(BaseModel[GbmParams]):
    """``kind = "lightgbm"``; tabular (lookback 1)."""

    kind = "lightgbm"
    params_type = GbmParams
    libraries = ("lightgbm", "numba")

    def __init__(self, params: GbmParams) -> None:
        super().__init__(params)
        self.booster: lgb.Booster | None = None
        self._trees: FlatTrees | None = None

    def _fit(self, X: FloatArray, y: FloatArray) -> None:
        p = self.params
        regressor = lgb.LGBMRegressor(
            n_estimators=p.n_estimators, learning_rate=p.learning_rate, num_leaves=p.num_leaves,
            max_depth=p.max_depth, min_child_samples=p.min_child_samples, subsample=p.subsample,
            subsample_freq=p.subsample_freq, colsample_bytree=p.colsample_bytree, reg_lambda=p.reg_lambda,
            objective=p.objective, random_state=p.seed, n_jobs=p.num_threads, deterministic=True,
            force_row_wise=True, verbose=-1)
        self._use(regressor.fit(X, y).booster_)

    def _use(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self._trees = compile_booster(booster)

    def _predict_many(self, X: FloatArray) -> FloatArray:
        return self._flat().leaf_sum_many(lightgbm_input(X))

    def _predict_one(self, window: FloatArray) -> float:
        return self._flat().leaf_sum_one(lightgbm_input(window[-1]))

    def _flat(self) -> FlatTrees:
        if self._trees is None:
            raise ModelError("the LightGBM model has no trees: fit or load it first")
        return self._trees

    def _save_state(self, directory: Path) -> None:
        assert self.booster is not None
        self.booster.save_model(str(directory / BOOSTER_FILE))

    def _load_state(self, directory: Path) -> None:
        path = directory / BOOSTER_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{path} is not a readable LightGBM model: {exc}") from exc
        if booster.num_feature() != self.n_features:
            raise ModelError(f"{path} expects {booster.num_feature()} features, model.json says {self.n_features}")
        self._use(booster)


def lightgbm_input(X: FloatArray) -> FloatArray:
    """``X`` as LightGBM's predictor reads it: values within ``1e-35`` of zero become zero."""
    return np.where(np.abs(X) <= ZERO_THRESHOLD, 0.0, np.ascontiguousarray(X, dtype=np.float64))


def compile_booster(booster: lgb.Booster) -> FlatTrees:
    """The trees of ``booster`` as flat arrays for the compiled walk."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise ModelError("only single-output LightGBM models can be compiled")
    return concat_trees([_flatten(info["tree_structure"]) for info in dump["tree_info"]])


def _flatten(root: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """One dumped tree as arrays, nodes numbered in depth-first order (root = 0)."""
    rows: list[list[float]] = []  # left, right, feature, threshold, value, missing, default_left
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, False)]
    while stack:
        node, parent, is_left = stack.pop()
        index = len(rows)
        if parent >= 0:
            rows[parent][0 if is_left else 1] = index
        rows.append(_node_row(node))
        if "leaf_value" not in node:
            stack.extend([(node["right_child"], index, False), (node["left_child"], index, True)])
    table = list(zip(*rows, strict=True))
    keys = ("left", "right", "feature", "threshold", "value", "missing", "default_left")
    return {key: np.array(column) for key, column in zip(keys, table, strict=True)}


def _node_row(node: dict[str, Any]) -> list[float]:
    if "leaf_value" in node:
        return [LEAF, LEAF, 0, 0.0, float(node["leaf_value"]), MISSING_NONE, 0]
    if node["decision_type"] != "<=":
        raise ModelError(f"LightGBM split type {node['decision_type']!r} (categorical) cannot be compiled")
    return [LEAF, LEAF, int(node["split_feature"]), float(node["threshold"]), 0.0,
            _MISSING[node["missing_type"]], int(bool(node["default_left"]))]
