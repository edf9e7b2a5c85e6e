"""Walk-forward evaluation: fit on the past, forecast the next block, move on; every metric out of sample.

Rows are bars in time order (row ``i`` = the features known at the close of bar ``i``, its target
the log return over the next ``horizon`` bars). Each fold trains on rows before its test block and
leaves a gap of ``horizon + embargo`` rows between the two (the *purge*: a training label of row
``i`` reaches bar ``i + horizon``, so the last training label ends before the first test bar and
no label straddles the boundary; ``embargo`` adds more rows for serially correlated features)::

    expanding:  [train ..................)  gap  [test)
    rolling:          [train ...........)  gap  [test)

Folds are either ``n_folds`` equal blocks at the end of the data, or, when ``min_train`` and
``test_size`` are both given, anchored at the start (fold ``k`` tests rows ``min_train + gap +
k*test_size`` onwards), so that truncating the data leaves every earlier fold and forecast as it
was (the look-ahead check). A model with ``lookback`` L > 1 forecasts the first test rows from
the L-1 rows of features before the block: past features, never past labels of the test block.

Big data: ``max_train_rows`` caps the rows one fit sees, by a stride over the training block
(tabular models; the most recent row always kept) or its most recent rows (sequence models,
whose windows must stay contiguous).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from dope.training.metrics import Metrics, compute_metrics
from dope.types import FloatArray, IntArray


class Forecaster(Protocol):
    """What walk-forward needs of a model (a subset of ``dope.models.Model``)."""

    @property
    def lookback(self) -> int: ...

    def fit(self, X: FloatArray, y: FloatArray) -> Any: ...

    def predict_many(self, X: FloatArray) -> FloatArray: ...


@dataclass(frozen=True)
class WalkForwardConfig:
    """How to cut the data into folds and how much of each training block to use."""

    n_folds: int = 5
    horizon: int = 1
    embargo: int = 0
    window: Literal["expanding", "rolling"] = "expanding"
    train_size: int | None = None
    """Rows in a rolling window (required for ``window="rolling"``)."""
    min_train: int | None = None
    test_size: int | None = None
    max_train_rows: int | None = None
    subsample: Literal["auto", "stride", "recent"] = "auto"

    def __post_init__(self) -> None:
        if self.n_folds < 1 or self.horizon < 1 or self.embargo < 0:
            raise ValueError("walk-forward: n_folds and horizon must be >= 1, embargo >= 0")
        if self.window == "rolling" and not self.train_size:
            raise ValueError("walk-forward: a rolling window needs train_size")
        if self.max_train_rows is not None and self.max_train_rows < 2:
            raise ValueError("walk-forward: max_train_rows must be >= 2")

    @property
    def gap(self) -> int:
        """Rows left out between a training block and its test block."""
        return self.horizon + self.embargo


@dataclass(frozen=True)
class ForecastFold:
    """One fold: row ranges ``[train_start, train_stop)`` and ``[test_start, test_stop)``."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int

    @property
    def test_rows(self) -> range:
        return range(self.test_start, self.test_stop)


def make_folds(n_rows: int, config: WalkForwardConfig) -> list[ForecastFold]:
    """The folds of ``n_rows`` rows; ``ValueError`` when the data is too short for them."""
    if config.min_train is not None and config.test_size is not None:
        starts, size = _anchored_starts(n_rows, config.min_train + config.gap, config.test_size), config.test_size
    else:
        size = config.test_size or n_rows // (config.n_folds + 1)
        starts = [n_rows - (config.n_folds - k) * size for k in range(config.n_folds)]
    folds = [_fold(k, start, min(start + size, n_rows), config) for k, start in enumerate(starts)]
    if size < 1 or not folds:
        raise ValueError(f"walk-forward: {n_rows} rows are too few for {config}")
    return [*folds[:-1], _fold(len(folds) - 1, folds[-1].test_start, n_rows, config)]


def _anchored_starts(n_rows: int, first: int, size: int) -> list[int]:
    return list(range(first, n_rows, size)) if size > 0 else []


def _fold(index: int, test_start: int, test_stop: int, config: WalkForwardConfig) -> ForecastFold:
    train_stop = test_start - config.gap
    train_start = max(0, train_stop - config.train_size) if config.window == "rolling" and config.train_size else 0
    minimum = max(2, config.min_train or 2)
    if train_stop - train_start < min(minimum, config.train_size or minimum):
        raise ValueError(f"walk-forward: fold {index} would train on {max(train_stop - train_start, 0)} rows "
                         f"(test rows {test_start}..{test_stop}); give more data or fewer folds")
    return ForecastFold(index, train_start, train_stop, test_start, test_stop)


def train_rows(start: int, stop: int, lookback: int, config: WalkForwardConfig) -> IntArray:
    """Row indices one fit uses out of ``[start, stop)``, after ``max_train_rows`` subsampling."""
    rows = np.arange(start, stop, dtype=np.int64)
    cap = config.max_train_rows
    if cap is None or len(rows) <= cap:
        return rows
    mode = config.subsample if config.subsample != "auto" else ("recent" if lookback > 1 else "stride")
    if mode == "recent":
        return rows[-cap:]
    stride = math.ceil(len(rows) / cap)
    return rows[::-1][::stride][::-1].copy()


@dataclass
class WalkForwardForecast:
    """Out-of-sample forecasts (NaN outside the test blocks) and their metrics against the zero baseline."""

    folds: list[ForecastFold]
    predictions: FloatArray
    metrics: Metrics
    baseline: Metrics
    fold_metrics: list[tuple[Metrics, Metrics]] = field(default_factory=list)
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    train_rows_used: list[int] = field(default_factory=list)

    @property
    def test_mask(self) -> npt.NDArray[np.bool_]:
        """True on the rows that were forecast out of sample (test blocks)."""
        mask = np.zeros(len(self.predictions), dtype=bool)
        for fold in self.folds:
            mask[fold.test_start:fold.test_stop] = True
        return mask

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (stored in a model's metadata)."""
        return {"model": self.metrics.as_dict(), "zero_baseline": self.baseline.as_dict(),
                "folds": [{"train": [f.train_start, f.train_stop], "test": [f.test_start, f.test_stop],
                           "train_rows_used": used, "model": m.as_dict(), "zero_baseline": b.as_dict()}
                          for f, used, (m, b) in zip(self.folds, self.train_rows_used, self.fold_metrics,
                                                     strict=True)],
                "fit_seconds": round(self.fit_seconds, 3), "predict_seconds": round(self.predict_seconds, 3)}


def walk_forward_forecast(X: npt.ArrayLike, y: npt.ArrayLike, factory: Callable[[], Forecaster],
                          config: WalkForwardConfig | None = None, *, progress: bool = False,
                          description: str = "walk-forward") -> WalkForwardForecast:
    """Fit a fresh ``factory()`` model per fold on its past and forecast its test block."""
    config = config or WalkForwardConfig()
    X_arr, y_arr = _check_xy(X, y)
    folds = make_folds(len(y_arr), config)
    result = WalkForwardForecast(folds, np.full(len(y_arr), np.nan), _EMPTY, _EMPTY)
    for fold in _progress(folds, progress, description):
        _run_fold(fold, X_arr, y_arr, factory(), config, result)
    mask = result.test_mask & np.isfinite(result.predictions)
    result.metrics = compute_metrics(y_arr[mask], result.predictions[mask])
    result.baseline = compute_metrics(y_arr[mask], np.zeros(int(mask.sum())))
    return result


def _run_fold(fold: ForecastFold, X: FloatArray, y: FloatArray, model: Forecaster, config: WalkForwardConfig,
              result: WalkForwardForecast) -> None:
    lookback = max(1, int(model.lookback))
    rows = train_rows(fold.train_start, fold.train_stop, lookback, config)
    began = time.perf_counter()
    model.fit(_rows(X, rows), _rows(y, rows))
    fitted = time.perf_counter()
    context = max(0, fold.test_start - lookback + 1)
    forecast = np.asarray(model.predict_many(X[context:fold.test_stop]), dtype=np.float64)
    result.predictions[fold.test_rows.start:fold.test_rows.stop] = forecast[fold.test_start - context:]
    result.fit_seconds += fitted - began
    result.predict_seconds += time.perf_counter() - fitted
    result.train_rows_used.append(len(rows))
    truth, own = y[fold.test_start:fold.test_stop], forecast[fold.test_start - context:]
    scored = np.isfinite(own)
    result.fold_metrics.append((compute_metrics(truth, own),
                                compute_metrics(truth[scored], np.zeros(int(scored.sum())))))


def _rows(values: FloatArray, rows: IntArray) -> FloatArray:
    """Rows of ``values``: a view when they are contiguous, else a copy."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return values[int(rows[0]):int(rows[-1]) + 1]
    return values[rows]


def _check_xy(X: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    X_arr, y_arr = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X_arr.ndim != 2 or y_arr.ndim != 1 or len(X_arr) != len(y_arr):
        raise ValueError(f"walk-forward needs X (n, f) and y (n,), got {X_arr.shape} and {y_arr.shape}")
    if not np.isfinite(y_arr).all():
        raise ValueError(f"walk-forward: {int((~np.isfinite(y_arr)).sum())} target(s) are NaN or infinite "
                         "(drop the rows whose forward return is unknown)")
    return X_arr, y_arr


def _progress(folds: list[ForecastFold], enabled: bool, description: str) -> Iterator[ForecastFold]:
    if not enabled:
        yield from folds
        return
    from tqdm import tqdm

    yield from tqdm(folds, desc=description, unit="fold", leave=False)


_EMPTY = Metrics(math.nan, math.nan, math.nan, 0, 0)
