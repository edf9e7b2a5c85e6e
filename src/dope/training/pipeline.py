"""Store -> features -> walk-forward -> registry, and a registered model's out-of-sample forecasts.

The pieces behind ``dope train`` and ``dope predict``; each reuses ``dope.features`` (one
feature implementation), ``dope.models`` and the walk-forward engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from dope.errors import UserError
from dope.features import FeatureParams, FeatureSet, compute_features, default_feature_set, training_matrix
from dope.features.plugins import plugin_features
from dope.models.registry import FeatureVersionError, Reference, Registry, trained_until_ms
from dope.store import BarStore
from dope.training.lineage import lineage
from dope.training.walkforward import (
    WalkForwardConfig,
    WalkForwardForecast,
    train_rows,
    walk_forward_forecast,
)

DEFAULT_MAX_TRAIN_ROWS: dict[str, int | None] = {
    "random_forest": 50_000, "lstm": 500_000, "lightgbm": 1_000_000, "ridge": None, "zero": None,
    "momentum": None,
}
"""Rows one fit sees by default: keeps a year of 10 s bars (3.15 M) under 5 minutes per model on 2 cores."""
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"random_forest": {"n_jobs": 2}, "lstm": {"threads": 2}}
"""Per-kind parameters used unless the user gives others. LightGBM keeps one thread: its OpenMP workers
spin, and on a busy 2-core machine two of them ran a 28 k-row fit 12 times slower than one."""
REFERENCE_ROWS = 2_000
"""Feature vectors (the most recent of the training window) saved with each model for drift monitors."""
PREDICTION_COLUMNS = ("open_time", "close_time", "prediction", "model_id", "trained_until_ms")


@dataclass(frozen=True)
class TrainRequest:
    """What to train, on what, and how to evaluate it."""

    kind: str
    symbol: str
    interval_ms: int
    start_ms: int | None = None
    end_ms: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    horizon: int = 1
    folds: int = 5
    embargo: int = 0
    max_train_rows: int | None = None
    context_symbols: tuple[str, ...] = ()
    parent_id: str = ""
    reference_rows: int = REFERENCE_ROWS

    def walk_forward_config(self) -> WalkForwardConfig:
        cap = self.max_train_rows if self.max_train_rows is not None else DEFAULT_MAX_TRAIN_ROWS.get(self.kind)
        return WalkForwardConfig(n_folds=self.folds, horizon=self.horizon, embargo=self.embargo,
                                 max_train_rows=cap or None)


@dataclass
class TrainOutcome:
    """A trained and registered model, its walk-forward result and timings."""

    model_id: str
    result: WalkForwardForecast
    rows: int
    evaluate_seconds: float
    fit_seconds: float


def model_factory(kind: str, params: Mapping[str, Any]) -> Callable[[], Any]:
    """A function returning fresh unfitted models of ``kind`` (per-kind defaults, then ``params``)."""
    from dope.models import ModelError, make_model

    merged = {**DEFAULT_PARAMS.get(kind, {}), **params}
    try:
        make_model(kind, **merged)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    return lambda: make_model(kind, **merged)


def load_bars(store: BarStore, symbol: str, interval_ms: int, start_ms: int | None,
              end_ms: int | None) -> pd.DataFrame:
    """Stored bars of ``symbol`` in ``[start_ms, end_ms)``; ``UserError`` when there are none."""
    bars = store.read_bars(symbol, interval_ms, start_ms, end_ms)
    if bars.empty:
        known = ", ".join(store.symbols(interval_ms)) or "none"
        raise UserError(f"no {symbol} bars at {interval_ms} ms in {store.root} for that range "
                        f"(symbols stored at that interval: {known})")
    return bars


def load_context(store: BarStore, fs: FeatureSet, interval_ms: int, start_ms: int | None,
                 end_ms: int | None) -> dict[str, pd.DataFrame] | None:
    """Bars of the feature set's context symbols over the same range (None when it has none)."""
    if not fs.context_symbols:
        return None
    return {s: load_bars(store, s, interval_ms, start_ms, end_ms) for s in fs.context_symbols}


def train(store: BarStore, registry: Registry, request: TrainRequest, *, progress: bool = False) -> TrainOutcome:
    """Walk-forward evaluate ``request.kind``, fit it on the whole range and register it."""
    fs = default_feature_set(request.interval_ms, request.context_symbols)
    bars = load_bars(store, request.symbol, request.interval_ms, request.start_ms, request.end_ms)
    context = load_context(store, fs, request.interval_ms, request.start_ms, request.end_ms)
    X, y, _ = training_matrix(bars, fs, request.horizon, context)
    factory, config = model_factory(request.kind, request.params), request.walk_forward_config()
    began = time.perf_counter()
    result = _evaluate(X, y, factory, config, progress, request.kind)
    evaluated = time.perf_counter()
    model = factory()
    rows = train_rows(0, len(y), max(1, int(model.lookback)), config)
    model.fit(X[rows], y[rows])
    fitted = time.perf_counter()
    metrics = {**result.summary(), "horizon": request.horizon, "rows": len(y), "final_fit_rows": len(rows)}
    record = lineage(bars, context, feature_set=fs.describe(), rows=len(y), parent_id=request.parent_id,
                     params={**DEFAULT_PARAMS.get(request.kind, {}), **request.params},
                     training={"horizon": request.horizon, "folds": request.folds, "embargo": request.embargo,
                               "max_train_rows": config.max_train_rows, "final_fit_rows": len(rows)})
    model_id = registry.register(
        model, feature_set=fs, symbol=request.symbol, interval_ms=request.interval_ms,
        train_start_ms=int(bars["open_time"].iloc[0]), train_end_ms=int(bars["close_time"].iloc[-1]) + 1,
        metrics=metrics, extra={"horizon": request.horizon, "lineage": record},
        reference=reference_sample(model, X, fs.names, request.reference_rows))
    return TrainOutcome(model_id, result, len(y), evaluated - began, fitted - evaluated)


def reference_sample(model: Any, X: np.ndarray, names: tuple[str, ...], rows: int) -> Reference | None:
    """The last ``rows`` training vectors and ``model``'s in-sample predictions on them (None for 0 rows).

    A model with a lookback reads the ``lookback - 1`` vectors before the sample too, so every row
    has a prediction.
    """
    lookback = max(1, int(model.lookback))
    n = min(rows, len(X) - lookback + 1)
    if n < 1:
        return None
    predictions = np.asarray(model.predict_many(X[len(X) - n - lookback + 1:]), dtype=np.float64)[-n:]
    return Reference(names, np.array(X[-n:], dtype=np.float64), predictions)


def _evaluate(X: np.ndarray, y: np.ndarray, factory: Callable[[], Any], config: WalkForwardConfig,
              progress: bool, kind: str) -> WalkForwardForecast:
    try:
        return walk_forward_forecast(X, y, factory, config, progress=progress, description=kind)
    except ValueError as exc:
        raise UserError(f"cannot evaluate {kind} on {len(y)} rows: {exc}") from None


def feature_set_of(meta: Mapping[str, Any]) -> FeatureSet:
    """The feature set a registered model was trained with, rebuilt and checked against its version."""
    described = meta["feature_set"]
    try:
        fs = FeatureSet(described["name"], msgspec.convert(described["params"], FeatureParams),
                        plugin_features(described.get("plugins", ())))
    except (KeyError, msgspec.ValidationError, ValueError) as exc:
        raise FeatureVersionError(f"model {meta['model_id']}: its feature set cannot be rebuilt ({exc})") from None
    if fs.version != described["version"]:
        raise FeatureVersionError(
            f"model {meta['model_id']} was trained on feature set {fs.name!r} version {described['version']}; "
            f"this DOPE computes version {fs.version} from the same parameters (the definitions changed): "
            "retrain the model")
    return fs


@dataclass
class Predictions:
    """Forecasts of a registered model, and notes on rows left out."""

    frame: pd.DataFrame
    notes: list[str]


def predict(store: BarStore, registry: Registry, model_id: str, symbol: str, start_ms: int | None,
            end_ms: int | None, allow_in_sample: bool = False) -> Predictions:
    """Out-of-sample forecasts of ``model_id`` for bars opening in ``[start_ms, end_ms)``.

    A bar is out of sample when it opens at or after the model's ``trained_until_ms``, whatever the
    symbol (:func:`~dope.models.registry.trained_until_ms`). Earlier bars (inside the training range,
    or before it: the model saw later data) are left out with a note, or kept with
    ``allow_in_sample``; it is an error when nothing is left. Every row carries ``model_id`` and
    ``trained_until_ms``, which ``dope backtest`` and ``dope optimize`` check.
    """
    meta = registry.verify(model_id)
    fs = feature_set_of(meta)
    model, meta = registry.load(model_id, feature_version=fs.version)
    interval_ms = int(meta["data"]["interval_ms"])
    lead = (fs.warmup + model.lookback + 1) * interval_ms
    read_from = None if start_ms is None else start_ms - lead
    bars = load_bars(store, symbol, interval_ms, read_from, end_ms)
    features = compute_features(bars, fs, load_context(store, fs, interval_ms, read_from, end_ms))
    forecast = model.predict_many(features[list(fs.names)].to_numpy(np.float64)) if len(features) else []
    frame = pd.DataFrame({"open_time": features["open_time"], "close_time": features["close_time"],
                          "prediction": np.asarray(forecast, dtype=np.float64), "model_id": model_id,
                          "trained_until_ms": trained_until_ms(meta)})
    if start_ms is not None:
        frame = frame[frame["open_time"] >= start_ms]
    return _out_of_sample(frame.reset_index(drop=True), meta, symbol, allow_in_sample)


def _out_of_sample(frame: pd.DataFrame, meta: Mapping[str, Any], symbol: str,
                   allow_in_sample: bool) -> Predictions:
    data, notes = meta["data"], []
    if frame.empty:
        raise UserError(f"no {symbol} bars with complete features in the requested range "
                        f"(the first {meta['feature_set'].get('warmup', '?')} bars only warm the features up)")
    if symbol != data["symbol"]:
        notes.append(f"the model was trained on {data['symbol']}, not {symbol}; its training period "
                     f"{data['train_start']} .. {data['train_end']} is in sample for {symbol} too")
    early = frame["open_time"] < trained_until_ms(meta)
    where = f"before {data['train_end']}, the end of the training data of {meta['model_id']}"
    if early.all() and not allow_in_sample:
        raise UserError(f"every requested bar opens {where} ({data['symbol']} {data['train_start']} .. "
                        f"{data['train_end']}): no out-of-sample rows to predict (--allow-in-sample writes them)")
    if early.any() and allow_in_sample:
        notes.append(f"kept {int(early.sum())} in-sample bar(s) opening {where} (--allow-in-sample); "
                     "dope backtest and dope optimize refuse them unless given --allow-in-sample too")
    elif early.any():
        notes.append(f"left out {int(early.sum())} bar(s) opening {where} (in sample)")
        frame = frame[~early]
    frame = frame[np.isfinite(frame["prediction"].to_numpy())]
    return Predictions(frame.reset_index(drop=True)[list(PREDICTION_COLUMNS)], notes)
