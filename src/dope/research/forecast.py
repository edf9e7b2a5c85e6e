"""Features, walk-forward studies, training into the registry and a registered model's forecasts.

One implementation: the features are :func:`dope.features.compute_features` (the live featurizer's
code), a walk-forward study is :func:`dope.training.walk_forward_forecast` on
:func:`dope.features.training_matrix` with the per-kind defaults of ``dope train``, and
:func:`train` / :func:`predict` call :mod:`dope.training.pipeline`, as ``dope train`` / ``dope predict`` do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dope import __version__
from dope.errors import UserError
from dope.features import FeatureSet, compute_features, default_feature_set, training_matrix
from dope.models.registry import Registry
from dope.research.data import Interval, StoreLike, Time, bars_interval, interval_ms, open_store, time_ms
from dope.training.metrics import Metrics
from dope.training.pipeline import TrainOutcome, TrainRequest, model_factory
from dope.training.pipeline import predict as pipeline_predict
from dope.training.pipeline import train as pipeline_train
from dope.training.walkforward import (
    Forecaster,
    WalkForwardConfig,
    WalkForwardForecast,
    walk_forward_forecast,
)

log = logging.getLogger(__name__)

ModelSpec = str | Callable[[], Forecaster]
"""A model kind (built in: ``"ridge"``, ``"random_forest"``, ...; an installed plugin's; or ``"module:Class"``,
see ``docs/plugins.md``) or a function returning a fresh, unfitted
model: any object with ``fit(X, y)``, ``predict_many(X)`` and ``lookback`` (see :func:`sklearn_model`)."""
RegistryLike = str | Registry | None


def feature_set(interval: Interval = "10s", context: Sequence[str] = (), **overrides: Any) -> FeatureSet:
    """The default feature set for bars of ``interval`` (``overrides`` replace its parameters).

    >>> feature_set("1h").names[:3]
    ('ret_1', 'ret_3', 'ret_6')
    """
    return default_feature_set(interval_ms(interval), tuple(context), **overrides)


def features(bars: pd.DataFrame, fs: FeatureSet | None = None, *,
             context: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The features of each bar (``open_time``, ``close_time``, one column per feature; warm-up rows
    dropped): the same numbers the live featurizer publishes. ``fs`` defaults to the bars' interval's
    default set; ``context`` holds the bars of its context symbols."""
    return compute_features(bars, fs or default_feature_set(bars_interval(bars)), context)


class SklearnForecaster:
    """A scikit-learn regressor as a walk-forward model (one row of features per forecast)."""

    lookback = 1

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> SklearnForecaster:
        self.estimator.fit(X, y)
        return self

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(X), dtype=np.float64)


def sklearn_model(estimator: Any) -> Callable[[], SklearnForecaster]:
    """A model factory for :func:`walk_forward` from any scikit-learn regressor (cloned for every fold).

    >>> from sklearn.linear_model import Ridge
    >>> make = sklearn_model(Ridge(alpha=1.0))
    >>> make().estimator is make().estimator
    False
    """
    from sklearn.base import clone

    def make() -> SklearnForecaster:
        return SklearnForecaster(clone(estimator))

    make.__name__ = type(estimator).__name__  # the study's name for the model
    return make


@dataclass
class WalkForward:
    """A walk-forward study: out-of-sample forecasts of every test block and their metrics.

    ``predictions`` has one row per forecast bar: ``open_time``, ``prediction``, ``target`` (the realised
    log return over ``horizon`` bars), ``fold``, and ``model_id`` / ``trained_until_ms`` (the end of the
    data its fold's fit saw), so :func:`~dope.research.backtest` accepts it as out of sample.
    """

    model: str
    forecast: WalkForwardForecast
    predictions: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> pd.DataFrame:
        """RMSE, directional accuracy, IC and bars scored, of the model and of the zero forecast."""
        return _metrics_frame({self.model: self.forecast.metrics, "zero": self.forecast.baseline})

    @property
    def folds(self) -> pd.DataFrame:
        """One row per fold: its rows, the rows its fit used, and its metrics against the zero forecast."""
        f = self.forecast
        return pd.DataFrame([{"fold": k.index, "train_start": k.train_start, "train_stop": k.train_stop,
                              "test_start": k.test_start, "test_stop": k.test_stop, "train_rows_used": used,
                              "rmse": m.rmse, "zero_rmse": b.rmse, "directional_accuracy": m.directional_accuracy,
                              "ic": m.ic}
                             for k, used, (m, b) in zip(f.folds, f.train_rows_used, f.fold_metrics, strict=True)])


def walk_forward(bars: pd.DataFrame, model: ModelSpec = "ridge", *, params: Mapping[str, Any] | None = None,
                 horizon: int = 1, folds: int = 5, embargo: int = 0, max_train_rows: int | None = None,
                 fs: FeatureSet | None = None, context: Mapping[str, pd.DataFrame] | None = None,
                 name: str | None = None, progress: bool = False) -> WalkForward:
    """Walk-forward evaluate ``model`` on ``bars``: fit on the past, forecast the next block, move on.

    The folds, purge and per-kind defaults are those of ``dope train``'s evaluation (``params`` are a
    model kind's parameters, as ``dope train --params``; a kind may be a plugin's or ``module:Class``). ``name`` names the model in the results
    (default: the kind, or the factory's ``__name__``). Deterministic for a given seed in ``params``.
    """
    interval = bars_interval(bars)
    fs = fs or default_feature_set(interval)
    X, y, times = training_matrix(bars, fs, horizon, context)
    kind, factory, config = _model(model, params or {}, interval, horizon, folds, embargo, max_train_rows)
    name = name or kind
    try:
        result = walk_forward_forecast(X, y, factory, config, progress=progress, description=name)
    except ValueError as exc:
        raise UserError(f"cannot evaluate {name} on {len(y)} rows: {exc}") from None
    settings = {"dope": __version__, "model": name, "params": dict(params or {}), "horizon": horizon, "folds": folds, "embargo": embargo,
                "max_train_rows": config.max_train_rows, "feature_set": fs.describe(), "interval_ms": interval}
    return WalkForward(name, result, _forecast_frame(result, y, times, name, horizon * interval + interval),
                       settings)


def _model(model: ModelSpec, params: Mapping[str, Any], interval: int, horizon: int, folds: int, embargo: int,
           max_train_rows: int | None) -> tuple[str, Callable[[], Forecaster], WalkForwardConfig]:
    if not isinstance(model, str):
        if params:
            raise UserError("params= are for a model kind; give a model factory its own parameters")
        name = getattr(model, "__name__", type(model).__name__)
        return name, model, WalkForwardConfig(n_folds=folds, horizon=horizon, embargo=embargo,
                                              max_train_rows=max_train_rows)
    request = TrainRequest(kind=model, symbol="", interval_ms=interval, params=params, horizon=horizon,
                           folds=folds, embargo=embargo, max_train_rows=max_train_rows)
    return model, model_factory(model, params), request.walk_forward_config()


def _forecast_frame(result: WalkForwardForecast, y: np.ndarray, times: np.ndarray, name: str,
                    label_reach_ms: int) -> pd.DataFrame:
    """The forecast rows; a fold's ``trained_until_ms`` ends after the last bar its last label reached."""
    parts = []
    for fold in result.folds:
        rows = slice(fold.test_start, fold.test_stop)
        parts.append(pd.DataFrame({
            "open_time": times[rows], "prediction": result.predictions[rows], "target": y[rows], "fold": fold.index,
            "model_id": f"{name}/fold{fold.index}",
            "trained_until_ms": int(times[fold.train_stop - 1]) + label_reach_ms}))
    return pd.concat(parts, ignore_index=True)


def _metrics_frame(metrics: Mapping[str, Metrics]) -> pd.DataFrame:
    rows = {name: {"rmse": m.rmse, "directional_accuracy": m.directional_accuracy, "ic": m.ic, "bars": m.n}
            for name, m in metrics.items()}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"bars": "int64"})


def open_registry(registry: RegistryLike = None) -> Registry:
    """The registry: ``registry`` itself, the folder it names, or the configuration's ``[registry] path``."""
    if isinstance(registry, Registry):
        return registry
    if registry is None:
        from dope.config import load_config

        registry = load_config(None).registry.path
    return Registry(registry)


def train(kind: str, symbol: str, interval: Interval = "10s", *, start: Time = None, end: Time = None,
          params: Mapping[str, Any] | None = None, horizon: int = 1, folds: int = 5, embargo: int = 0,
          max_train_rows: int | None = None, context: Sequence[str] = (), store: StoreLike = None,
          registry: RegistryLike = None, progress: bool = False) -> TrainOutcome:
    """``dope train``: walk-forward evaluate ``kind`` on stored bars, fit it on the whole range, register it.

    Returns the new ``model_id``, the walk-forward result and the timings.
    """
    request = TrainRequest(kind=kind, symbol=symbol, interval_ms=interval_ms(interval), start_ms=time_ms(start),
                           end_ms=time_ms(end), params=dict(params or {}), horizon=horizon, folds=folds,
                           embargo=embargo, max_train_rows=max_train_rows, context_symbols=tuple(context))
    return pipeline_train(open_store(store), open_registry(registry), request, progress=progress)


def predict(model_id: str, symbol: str, *, start: Time = None, end: Time = None, store: StoreLike = None,
            registry: RegistryLike = None, allow_in_sample: bool = False) -> pd.DataFrame:
    """``dope predict``: a registered model's forecasts of stored bars, out of sample only.

    Bars opening before the model's ``trained_until_ms`` are left out (or kept with ``allow_in_sample``);
    what was left out is logged and listed in ``frame.attrs["notes"]``. Columns: ``open_time``,
    ``close_time``, ``prediction``, ``model_id``, ``trained_until_ms``.
    """
    result = pipeline_predict(open_store(store), open_registry(registry), model_id, symbol, time_ms(start),
                              time_ms(end), allow_in_sample=allow_in_sample)
    for note in result.notes:
        log.warning("%s", note)
    result.frame.attrs["notes"] = list(result.notes)
    return result.frame
