"""Threshold and model searches (grid and Optuna) with the overfitting statistics of every search.

A *trial* is one (model, upper, lower) choice backtested by :func:`dope.backtest.run_vectorized` over a
span of bars. Every search reports, beside its table of trials, the Deflated Sharpe Ratio of the best
trial with the real number of trials tried and the PBO (CSCV) over the matrix of the trials' returns.
Both use *period* returns (daily by default: the equity at the last bar of each day), the usual
frequency of these statistics; the Sharpe ratios of the table are the backtest's own, annualised.

Grid trials run in chunks on a :class:`~dope.backtest.parallel.Runner` (serial or Dask: same result).
An Optuna search (seeded TPE) is sequential by nature and runs in one process.

>>> space = SearchSpace(models=("m",), uppers=(0.0, 0.001), lowers=(-0.001, 0.0))
>>> [(t.upper, t.lower) for t in space.trials()]
[(0.0, -0.001), (0.0, 0.0), (0.001, -0.001), (0.001, 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.overfitting import (
    DeflatedSharpe,
    PBOResult,
    deflated_sharpe_of_trials,
    probability_of_backtest_overfitting,
)
from dope.backtest.parallel import Runner, SerialRunner
from dope.types import DAY_MS, FloatArray, IntArray

METRIC_COLUMNS: Final = ("sharpe", "sortino", "total_return", "cagr", "max_drawdown", "calmar", "n_trades",
                          "win_rate", "exposure", "turnover", "fees_paid")


@dataclass(frozen=True)
class Market:
    """Bars and the predictions of one or more models, aligned row by row (one row per bar).

    ``predictions[name][i]`` is the model's prediction made at the close of bar ``i`` (NaN: none, hold).
    """

    open_time: IntArray
    open: FloatArray
    close: FloatArray
    predictions: Mapping[str, FloatArray]
    interval_ms: int

    def __post_init__(self) -> None:
        n = self.open_time.size
        if self.open.size != n or self.close.size != n:
            raise ValueError("open_time, open and close must have the same length")
        for name, values in self.predictions.items():
            if values.size != n:
                raise ValueError(f"predictions of {name!r} have {values.size} rows, the bars {n}")

    @property
    def n(self) -> int:
        """Number of bars."""
        return int(self.open_time.size)


@dataclass(frozen=True)
class Trial:
    """One choice of model and thresholds."""

    model: str
    upper: float
    lower: float


@dataclass(frozen=True)
class SearchSpace:
    """Models and thresholds to search: a grid, or the bounds of an Optuna search."""

    models: tuple[str, ...]
    uppers: tuple[float, ...]
    lowers: tuple[float, ...]

    def trials(self) -> list[Trial]:
        """Every (model, upper, lower) of the grid with ``lower <= upper``."""
        return [Trial(m, u, lo) for m in self.models for u in self.uppers for lo in self.lowers if lo <= u]

    @property
    def upper_bounds(self) -> tuple[float, float]:
        return min(self.uppers), max(self.uppers)

    @property
    def lower_bounds(self) -> tuple[float, float]:
        return min(self.lowers), max(self.lowers)


@dataclass(frozen=True)
class SearchResult:
    """The trials of a search on one span of bars, its best trial and its overfitting statistics."""

    table: pd.DataFrame
    period_returns: FloatArray
    best: Trial
    objective: str
    span: tuple[int, int]
    dsr: DeflatedSharpe | None
    pbo: PBOResult | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        """Number of trials tried (all count in the DSR)."""
        return len(self.table)


def linspace_values(start: float, stop: float, count: int) -> tuple[float, ...]:
    """``count`` evenly spaced values from ``start`` to ``stop``, rounded to 12 digits."""
    return tuple(round(float(v), 12) for v in np.linspace(start, stop, count))


def run_trial(trial: Trial, market: Market, config: BacktestConfig, span: tuple[int, int]) -> Any:
    """The backtest of one trial over bars ``span[0]:span[1]``."""
    from dope.backtest.vectorized import run_vectorized

    start, end = span
    return run_vectorized(market.open[start:end], market.close[start:end],
                          market.predictions[trial.model][start:end],
                          config.with_thresholds(trial.upper, trial.lower),
                          times=market.open_time[start:end], interval_ms=market.interval_ms)


def evaluate_trials(trials: Sequence[Trial], market: Market, config: BacktestConfig, span: tuple[int, int],
                    period_ms: int = DAY_MS) -> tuple[list[dict[str, Any]], FloatArray]:
    """Table rows and the (periods x trials) period returns of ``trials``, one backtest each."""
    bounds = period_bounds(market.open_time[span[0]:span[1]], period_ms)
    rows, columns = [], []
    for trial in trials:
        result = run_trial(trial, market, config, span)
        rows.append({"model": trial.model, "upper": trial.upper, "lower": trial.lower,
                     **metric_values(result.metrics)})
        columns.append(period_returns(np.asarray(result.equity, dtype=np.float64), bounds,
                                      config.initial_cash))
    return rows, np.column_stack(columns) if columns else np.empty((len(bounds), 0))


@dataclass(frozen=True)
class GridChunk:
    """One task of a grid search: a model and part of the grid (every ``lower <= upper`` pair)."""

    model: str
    uppers: tuple[float, ...]
    lowers: tuple[float, ...]


def evaluate_chunk(chunk: GridChunk, market: Market, config: BacktestConfig, span: tuple[int, int],
                   period_ms: int = DAY_MS) -> tuple[list[dict[str, Any]], FloatArray]:
    """Table rows and period returns of a grid chunk, by the compiled sweep (a pure, picklable task)."""
    from dope.backtest.vectorized import sweep, sweep_equity, threshold_pairs

    start, end = span
    args = (market.open[start:end], market.close[start:end], market.predictions[chunk.model][start:end])
    table = sweep(*args, chunk.uppers, chunk.lowers, config, times=market.open_time[start:end],
                  interval_ms=market.interval_ms)
    equity = sweep_equity(*args, threshold_pairs(chunk.uppers, chunk.lowers), config)
    bounds = period_bounds(market.open_time[start:end], period_ms)
    returns = np.column_stack([period_returns(e, bounds, config.initial_cash) for e in equity]) \
        if len(equity) else np.empty((len(bounds), 0))
    rows = [{"model": chunk.model, "upper": float(r["upper"]), "lower": float(r["lower"]),
             **metric_values(r)} for r in table.to_dict("records")]
    return rows, returns


def metric_values(metrics: Any) -> dict[str, float]:
    """The metrics the optimizer tabulates, from a backtest's metrics (a struct or a mapping)."""
    if isinstance(metrics, Mapping):
        return {name: float(metrics.get(name, math.nan)) for name in METRIC_COLUMNS}
    return {name: float(getattr(metrics, name, math.nan)) for name in METRIC_COLUMNS}


def period_bounds(open_time: IntArray, period_ms: int) -> IntArray:
    """Index of the last bar of each period (UTC day by default) of the bars ``open_time``."""
    period = open_time // period_ms
    last = np.flatnonzero(np.diff(period) != 0)
    return np.append(last, open_time.size - 1).astype(np.int64)


def period_returns(equity: FloatArray, bounds: IntArray, initial: float) -> FloatArray:
    """Simple return of each period, from the equity at the period's last bar."""
    marks = np.concatenate(([initial], equity[bounds]))
    return np.asarray(marks[1:] / marks[:-1] - 1.0, dtype=np.float64)


def grid_search(market: Market, space: SearchSpace, config: BacktestConfig, *,
                span: tuple[int, int] | None = None, runner: Runner | None = None, objective: str = "sharpe",
                period_ms: int = DAY_MS, chunks: int = 8) -> SearchResult:
    """Backtest every trial of the grid over ``span`` (default all bars) and pick the best by ``objective``."""
    span = span or (0, market.n)
    if not space.trials():
        raise ValueError("the grid is empty: every lower threshold is above every upper threshold")
    runner = runner or SerialRunner(progress=False)
    parts = runner.map(evaluate_chunk, grid_chunks(space, chunks), runner.share(market), config, span, period_ms,
                       label="grid")
    rows = [row for part_rows, _ in parts for row in part_rows]
    returns = np.column_stack([r for _, r in parts])
    return finish_search(pd.DataFrame(rows), returns, objective, span, {"method": "grid"})


def grid_chunks(space: SearchSpace, chunks: int) -> list[GridChunk]:
    """The grid cut into about ``chunks`` tasks: by model, then by groups of upper thresholds."""
    per_model = max(1, chunks // max(1, len(space.models)))
    size = max(1, math.ceil(len(space.uppers) / per_model))
    groups = [space.uppers[i:i + size] for i in range(0, len(space.uppers), size)]
    out = [GridChunk(m, g, space.lowers) for m in space.models for g in groups]
    return [c for c in out if any(lo <= u for u in c.uppers for lo in c.lowers)]


def optuna_search(market: Market, space: SearchSpace, config: BacktestConfig, *, n_trials: int = 100,
                  seed: int = 0, span: tuple[int, int] | None = None, objective: str = "sharpe",
                  period_ms: int = DAY_MS) -> SearchResult:
    """A seeded TPE search within the grid's bounds (``lower > upper`` suggestions are swapped)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    span = span or (0, market.n)
    rows: list[dict[str, Any]] = []
    columns: list[FloatArray] = []

    def score(trial: optuna.Trial) -> float:
        chosen = _suggest(trial, space)
        part_rows, part = evaluate_trials([chosen], market, config, span, period_ms)
        rows.extend(part_rows)
        columns.append(part[:, 0])
        value = part_rows[0][objective]
        return value if math.isfinite(value) else -1e300

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(score, n_trials=n_trials)
    return finish_search(pd.DataFrame(rows), np.column_stack(columns), objective, span,
                         {"method": "optuna", "seed": seed})


def _suggest(trial: Any, space: SearchSpace) -> Trial:
    model = trial.suggest_categorical("model", list(space.models))
    upper = trial.suggest_float("upper", *space.upper_bounds)
    lower = trial.suggest_float("lower", *space.lower_bounds)
    return Trial(model, max(upper, lower), min(upper, lower))


def finish_search(table: pd.DataFrame, returns: FloatArray, objective: str, span: tuple[int, int],
                  extra: dict[str, Any]) -> SearchResult:
    """Pick the best trial (first of ties) and compute the DSR and the PBO of the search."""
    if objective not in table.columns:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(METRIC_COLUMNS)}")
    scores = table[objective].to_numpy(dtype=np.float64)
    best_index = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))
    row = table.iloc[best_index]
    best = Trial(str(row["model"]), float(row["upper"]), float(row["lower"]))
    dsr = _dsr(returns, best_index)
    pbo = _pbo(returns)
    return SearchResult(table, returns, best, objective, span, dsr, pbo, extra)


def _dsr(returns: FloatArray, best: int) -> DeflatedSharpe | None:
    try:
        return deflated_sharpe_of_trials(returns, selected=best)
    except ValueError:  # too few periods, or a degenerate return distribution
        return None


def pbo_blocks(n_periods: int, max_blocks: int = 16, min_rows: int = 4) -> int:
    """The most (even, at most ``max_blocks``) CSCV blocks of at least ``min_rows`` periods; 0 if none."""
    blocks = min(max_blocks, n_periods // min_rows)
    return blocks - blocks % 2 if blocks >= 2 else 0


def _pbo(returns: FloatArray) -> PBOResult | None:
    blocks = pbo_blocks(returns.shape[0])
    if blocks < 2 or returns.shape[1] < 2:
        return None
    return probability_of_backtest_overfitting(returns, n_blocks=blocks)


def heatmap_frame(table: pd.DataFrame, model: str, metric: str = "sharpe") -> pd.DataFrame:
    """The metric of one model's trials as a (lower x upper) frame, for a heatmap."""
    rows = table[table["model"] == model]
    return rows.pivot_table(index="lower", columns="upper", values=metric, aggfunc="first")


def market_from_frames(bars: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], interval_ms: int) -> Market:
    """A :class:`Market` of the bars over the span every model predicts (``open_time``, ``prediction``).

    A bar with no prediction from a model (a gap) gets NaN, which the trader reads as "hold".
    """
    if not predictions:
        raise ValueError("no predictions given")
    first = max(int(p["open_time"].min()) for p in predictions.values())
    last = min(int(p["open_time"].max()) for p in predictions.values())
    times = bars["open_time"].to_numpy(np.int64)
    keep = (times >= first) & (times <= last)
    if keep.sum() < 2:
        raise ValueError("the bars and the predictions do not overlap (check symbol, interval and time range)")
    frame = bars.loc[keep, ["open_time", "open", "close"]].reset_index(drop=True)
    preds = {name: _aligned(frame["open_time"], p, name) for name, p in predictions.items()}
    return Market(frame["open_time"].to_numpy(np.int64), frame["open"].to_numpy(np.float64),
                  frame["close"].to_numpy(np.float64), preds, interval_ms)


def _aligned(times: pd.Series, predictions: pd.DataFrame, name: str) -> FloatArray:
    if predictions["open_time"].duplicated().any():
        raise ValueError(f"predictions of {name!r} have duplicate open times")
    series = predictions.set_index("open_time")["prediction"].astype(np.float64)
    return np.asarray(series.reindex(times.to_numpy()).to_numpy(), dtype=np.float64)
