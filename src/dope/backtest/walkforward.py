"""Walk-forward optimization: search on a window, trade the chosen thresholds on the next, roll.

Only the out-of-sample part is reported: the test windows are stitched into one continuous backtest in
which bar ``t`` of test window ``k`` is traded with the model and thresholds chosen on training window
``k`` (the position carries over from one window to the next, as it would live). Each fold's search runs
as one task on a :class:`~dope.backtest.parallel.Runner`, so folds run in parallel on Dask and give the
same answer as a serial run.

>>> [(f.train_start, f.test_start, f.test_end) for f in walk_forward_folds(10, train=4, test=3)]
[(0, 4, 7), (3, 7, 10)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd

from dope.backtest.config import BacktestConfig
from dope.backtest.optimize import (
    Market,
    SearchResult,
    SearchSpace,
    Trial,
    finish_search,
    grid_search,
    metric_values,
    optuna_search,
    period_bounds,
    period_returns,
    run_trial,
)
from dope.backtest.overfitting import DeflatedSharpe, deflated_sharpe_of_moments, return_moments
from dope.backtest.parallel import Runner, SerialRunner
from dope.trading.accounting import HOLD, signal
from dope.types import DAY_MS, FloatArray

Method = Literal["grid", "optuna"]


@dataclass(frozen=True)
class OptimizationFold:
    """Bar indices of one training window and the test window after it (half-open ranges)."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


@dataclass(frozen=True)
class SearchSpec:
    """How each fold searches: the space, the method, Optuna's budget, seeds and objective.

    ``seeds`` (Optuna only; a grid is deterministic): seeds ``seed .. seed + seeds - 1`` are all tried
    and all count as trials (see :func:`search` and :func:`compare_models`).
    """

    space: SearchSpace
    method: Method = "grid"
    n_trials: int = 50
    seed: int = 0
    objective: str = "sharpe"
    period_ms: int = DAY_MS
    seeds: int = 1

    def seeded(self) -> list[SearchSpec]:
        """One single-seed spec per seed (one spec for a grid, whose result no seed changes)."""
        if self.method == "grid":
            return [replace(self, seeds=1)]
        return [replace(self, seed=self.seed + k, seeds=1) for k in range(self.seeds)]


@dataclass(frozen=True)
class FoldOutcome:
    """What a fold's search chose, how many trials it tried and its in-sample statistics."""

    fold: OptimizationFold
    best: Trial
    n_trials: int
    is_score: float
    dsr: float
    pbo: float


@dataclass(frozen=True)
class WalkForwardOptimization:
    """The stitched out-of-sample backtest, buy-and-hold over the same bars, and the folds."""

    folds: pd.DataFrame
    open_time: Any
    result: Any
    benchmark: Any
    span: tuple[int, int]
    n_trials: int
    psr: DeflatedSharpe | None

    @property
    def metrics(self) -> dict[str, float]:
        """The tabulated metrics of the stitched out-of-sample backtest."""
        return metric_values(self.result.metrics)


def walk_forward_folds(n: int, train: int, test: int, anchored: bool = False) -> list[OptimizationFold]:
    """Folds over ``n`` bars: ``train`` bars (all the past when ``anchored``), then ``test`` bars; roll by ``test``."""
    if train < 2 or test < 1:
        raise ValueError(f"need train >= 2 and test >= 1 bars, got {train} and {test}")
    if n < train + 1:
        raise ValueError(f"{n} bars are too few for a {train}-bar training window and a test window")
    starts = range(train, n, test)
    return [OptimizationFold(k, 0 if anchored else s - train, s, s, min(s + test, n)) for k, s in enumerate(starts)]


def search(market: Market, spec: SearchSpec, config: BacktestConfig, span: tuple[int, int],
           runner: Runner | None = None) -> SearchResult:
    """One search of ``spec`` over ``span`` (grid trials on ``runner``; Optuna in this process).

    With several Optuna seeds, every seed's trials go into one table (column ``seed``) and all count in
    the DSR and the PBO; ``extra["seed_best"]`` holds each seed's best objective.
    """
    if spec.method == "grid":
        return grid_search(market, spec.space, config, span=span, runner=runner, objective=spec.objective,
                           period_ms=spec.period_ms)
    parts = [optuna_search(market, spec.space, config, n_trials=one.n_trials, seed=one.seed + span[0],
                           span=span, objective=spec.objective, period_ms=spec.period_ms)
             for one in spec.seeded()]
    if len(parts) == 1:
        return parts[0]
    table = pd.concat([p.table.assign(seed=p.extra["seed"]) for p in parts], ignore_index=True)
    return finish_search(table, np.column_stack([p.period_returns for p in parts]), spec.objective, span,
                         {"method": "optuna", "seeds": [p.extra["seed"] for p in parts],
                          "seed_best": [float(p.table[spec.objective].max()) for p in parts]})


def optimize_fold(fold: OptimizationFold, market: Market, spec: SearchSpec, config: BacktestConfig) -> FoldOutcome:
    """Search the fold's training window (serially: this is one task)."""
    found = search(market, spec, config, (fold.train_start, fold.train_end), SerialRunner(progress=False))
    score = float(found.table[spec.objective].max())
    return FoldOutcome(fold, found.best, found.n_trials, score,
                       found.dsr.dsr if found.dsr else float("nan"), found.pbo.pbo if found.pbo else float("nan"))


def walk_forward_optimize(market: Market, spec: SearchSpec, config: BacktestConfig, folds: list[OptimizationFold],
                          runner: Runner | None = None) -> WalkForwardOptimization:
    """Optimize every fold on ``runner`` and stitch the out-of-sample windows into one backtest."""
    runner = runner or SerialRunner(progress=False)
    outcomes = runner.map(optimize_fold, folds, runner.share(market), spec, config, label="walk-forward")
    return _assemble(market, outcomes, config, spec.period_ms)


def threshold_signal(prediction: FloatArray, upper: float, lower: float) -> FloatArray:
    """+1 where the prediction asks for long, -1 where it asks to sell (flat, or short), else (and NaN) 0.

    Each bar's signal is the trading rule's own (:func:`dope.trading.accounting.signal`, the one
    :func:`dope.trading.rule.decide` uses), so the stitched signal traded with thresholds (0.5, -0.5)
    makes exactly the decisions of the fold's thresholds on ``prediction`` (tested).
    """
    return _signals(np.ascontiguousarray(prediction, dtype=np.float64), upper, lower)


@numba.njit(cache=True)
def _signals(prediction: FloatArray, upper: float, lower: float) -> FloatArray:
    out = np.empty(prediction.shape[0])
    for t in range(prediction.shape[0]):
        wanted = signal(prediction[t], upper, lower, True)
        out[t] = 0.0 if wanted == HOLD else float(wanted)
    return out


def stitched_signal(market: Market, outcomes: list[FoldOutcome]) -> FloatArray:
    """Each test window's signal from its fold's chosen model and thresholds, end to end."""
    parts = [threshold_signal(market.predictions[o.best.model][o.fold.test_start:o.fold.test_end],
                              o.best.upper, o.best.lower) for o in outcomes]
    return np.concatenate(parts)


def stitched_backtest(market: Market, outcomes: list[FoldOutcome], config: BacktestConfig) -> Any:
    """One continuous backtest of the test windows (the signal is traded with thresholds +-0.5)."""
    from dope.backtest.vectorized import run_vectorized

    start, end = outcomes[0].fold.test_start, outcomes[-1].fold.test_end
    return run_vectorized(market.open[start:end], market.close[start:end], stitched_signal(market, outcomes),
                          config.with_thresholds(0.5, -0.5), times=market.open_time[start:end],
                          interval_ms=market.interval_ms)


def _buy_and_hold(market: Market, span: tuple[int, int], config: BacktestConfig) -> Any:
    from dope.backtest.vectorized import buy_and_hold

    start, end = span
    return buy_and_hold(market.open[start:end], market.close[start:end], config,
                        times=market.open_time[start:end], interval_ms=market.interval_ms)


def _fold_table(market: Market, outcomes: list[FoldOutcome], config: BacktestConfig) -> pd.DataFrame:
    """One row per fold: windows (bar open times), the choice, in-sample score and out-of-sample metrics."""
    rows = []
    for o in outcomes:
        f = o.fold
        oos = metric_values(run_trial(o.best, market, config, (f.test_start, f.test_end)).metrics)
        rows.append({"fold": f.index, "train_start": int(market.open_time[f.train_start]),
                     "test_start": int(market.open_time[f.test_start]),
                     "test_end": int(market.open_time[f.test_end - 1]) + market.interval_ms,
                     "model": o.best.model, "upper": o.best.upper, "lower": o.best.lower,
                     "n_trials": o.n_trials, "is_sharpe": o.is_score, "is_dsr": o.dsr, "is_pbo": o.pbo,
                     **{f"oos_{k}": v for k, v in oos.items()}})
    return pd.DataFrame(rows)


def _psr(market: Market, result: Any, span: tuple[int, int], config: BacktestConfig,
         period_ms: int) -> DeflatedSharpe | None:
    """The PSR (a DSR of one trial) of the stitched out-of-sample period returns."""
    bounds = period_bounds(market.open_time[span[0]:span[1]], period_ms)
    r = period_returns(np.asarray(result.equity, dtype=np.float64), bounds, config.initial_cash)
    try:
        m = return_moments(r)
        return deflated_sharpe_of_moments(m, [m.sharpe])
    except ValueError:
        return None


def compare_models(market: Market, spec: SearchSpec, config: BacktestConfig, folds: list[OptimizationFold],
                   runner: Runner | None = None) -> dict[str, WalkForwardOptimization]:
    """Walk-forward optimization of each model alone and, with several models, of all of them together.

    With several Optuna seeds each seed is a variant of its own, named ``<variant>/s<seed>``, so that
    :func:`deflate_variants` counts every seed. The folds of every variant go to ``runner`` in one batch.
    """
    variants: dict[str, SearchSpec] = {}
    specs = spec.seeded()
    for one in specs:
        suffix = f"/s{one.seed}" if len(specs) > 1 else ""
        variants |= {m + suffix: replace(one, space=replace(one.space, models=(m,))) for m in one.space.models}
        if len(one.space.models) > 1:
            variants["all models" + suffix] = one
    runner = runner or SerialRunner(progress=False)
    jobs = [(name, fold) for name in variants for fold in folds]
    outcomes = runner.map(_optimize_job, jobs, runner.share(market), variants, config, label="walk-forward")
    return {name: _assemble(market, [o for (n, _), o in zip(jobs, outcomes, strict=True) if n == name],
                            config, variants[name].period_ms) for name in variants}


def _optimize_job(job: tuple[str, OptimizationFold], market: Market, variants: dict[str, SearchSpec],
                  config: BacktestConfig) -> FoldOutcome:
    return optimize_fold(job[1], market, variants[job[0]], config)


def _assemble(market: Market, outcomes: list[FoldOutcome], config: BacktestConfig,
              period_ms: int) -> WalkForwardOptimization:
    span = (outcomes[0].fold.test_start, outcomes[-1].fold.test_end)
    result = stitched_backtest(market, outcomes, config)
    return WalkForwardOptimization(_fold_table(market, outcomes, config), market.open_time[span[0]:span[1]], result,
                             _buy_and_hold(market, span, config), span, sum(o.n_trials for o in outcomes),
                             _psr(market, result, span, config, period_ms))


@dataclass(frozen=True)
class SeedSpread:
    """One figure over seeds: mean, sample sd (NaN for one value) and worst (the minimum)."""

    mean: float
    sd: float
    worst: float

    @classmethod
    def of(cls, values: list[float]) -> SeedSpread:
        """The spread of the finite ``values`` (all NaN when none is finite)."""
        finite = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
        if finite.size == 0:
            return cls(float("nan"), float("nan"), float("nan"))
        sd = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
        return cls(float(finite.mean()), sd, float(finite.min()))

    def text(self, spec: str) -> str:
        """``mean ± sd (worst w)`` with ``spec`` (e.g. ``.2f``); ``n/a`` for a NaN."""
        def f(value: float, fmt: str) -> str:
            return format(value, fmt) if np.isfinite(value) else "n/a"

        return f"{f(self.mean, spec)} ± {f(self.sd, spec.lstrip('+'))} (worst {f(self.worst, spec)})"


def seed_groups(names: list[str]) -> dict[str, list[str]]:
    """Base name -> its per-seed variant names (``<name>/s<seed>``), for the names that carry a seed."""
    groups: dict[str, list[str]] = {}
    for name in names:
        base, sep, seed = name.rpartition("/s")
        if sep and seed.isdigit():
            groups.setdefault(base, []).append(name)
    return groups


def deflate_variants(results: dict[str, WalkForwardOptimization], period_ms: int = DAY_MS) -> DeflatedSharpe | None:
    """DSR of the best variant's out-of-sample Sharpe, deflated by the number of variants compared."""
    moments = {name: r.psr for name, r in results.items() if r.psr is not None}
    if not moments:
        return None
    sharpes = np.array([m.sharpe for m in moments.values()])
    best = max(moments.values(), key=lambda m: m.sharpe)
    return deflated_sharpe_of_moments(best, sharpes)
