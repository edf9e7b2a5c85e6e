"""Grid and Optuna searches, walk-forward optimization and the stitched out-of-sample backtest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dope.backtest.config import BacktestConfig
from dope.backtest.optimize import (
    Market,
    SearchSpace,
    Trial,
    grid_search,
    heatmap_frame,
    optuna_search,
    pbo_blocks,
    period_bounds,
    period_returns,
    run_trial,
)
from dope.backtest.vectorized import run_vectorized
from dope.backtest.walkforward import (
    FoldOutcome,
    SearchSpec,
    compare_models,
    deflate_variants,
    search,
    stitched_backtest,
    threshold_signal,
    walk_forward_folds,
    walk_forward_optimize,
)
from dope.trading.accounting import HOLD, signal

INTERVAL = 900_000
CONFIG = BacktestConfig(upper=0.0, lower=0.0, fee_rate=0.001, slippage_bps=1.0)


def make_market(n: int = 96 * 60, seed: int = 0) -> Market:
    """Random-walk prices; model "good" sees the next bar's return through noise, "noise" does not."""
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, 0.004, n)
    close = 100.0 * np.exp(np.cumsum(log_ret))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0, 1e-4, n))
    future = np.concatenate((log_ret[2:], [0.0, 0.0]))  # decision at close t fills at open t+1
    good = future + rng.normal(0.0, 0.004, n)
    times = 1_735_689_600_000 + INTERVAL * np.arange(n, dtype=np.int64)
    return Market(times, open_, close, {"good": good, "noise": rng.normal(0.0, 0.004, n)}, INTERVAL)


SPACE = SearchSpace(models=("good", "noise"), uppers=(0.0, 0.001, 0.002, 0.004),
                    lowers=(-0.004, -0.002, -0.001, 0.0))


def test_grid_search_tabulates_every_trial_like_a_single_backtest() -> None:
    market = make_market()
    found = grid_search(market, SPACE, CONFIG)
    trials = SPACE.trials()
    assert found.n_trials == len(trials) == 2 * 16
    assert list(zip(found.table["model"], found.table["upper"], found.table["lower"], strict=True)) == \
        [(t.model, t.upper, t.lower) for t in trials]
    for i in (0, 7, 13):
        single = run_trial(trials[i], market, CONFIG, (0, market.n)).metrics
        row = found.table.iloc[i]
        for name in ("sharpe", "total_return", "n_trades", "fees_paid"):
            assert row[name] == pytest.approx(single[name], rel=1e-12, nan_ok=True)
    assert found.best.model == "good"
    assert found.table["sharpe"].max() == pytest.approx(found.table.iloc[trials.index(found.best)]["sharpe"])


def test_search_reports_dsr_with_every_trial_and_pbo() -> None:
    found = grid_search(make_market(), SPACE, CONFIG)
    assert found.dsr is not None and found.pbo is not None
    assert found.dsr.n_trials == found.n_trials == found.period_returns.shape[1]
    assert found.period_returns.shape[0] == 60  # one return per day
    assert found.pbo.n_blocks == 14 and found.pbo.n_trials == 32
    assert found.pbo.pbo < 0.5  # the informed model wins out of sample too


def test_period_returns_compound_to_the_total_return() -> None:
    market = make_market(n=96 * 10 + 17)
    result = run_trial(Trial("good", 0.001, -0.001), market, CONFIG, (0, market.n))
    bounds = period_bounds(market.open_time, 86_400_000)
    assert len(bounds) == 11 and bounds[-1] == market.n - 1
    r = period_returns(result.equity, bounds, CONFIG.initial_cash)
    assert np.prod(1 + r) - 1 == pytest.approx(result.metrics["total_return"], rel=1e-9)


def test_pbo_blocks() -> None:
    assert pbo_blocks(365) == 16 and pbo_blocks(60) == 14 and pbo_blocks(9) == 2 and pbo_blocks(7) == 0


def test_optuna_search_is_seeded_and_counts_its_trials() -> None:
    market = make_market(n=96 * 20)
    a = optuna_search(market, SPACE, CONFIG, n_trials=12, seed=3)
    b = optuna_search(market, SPACE, CONFIG, n_trials=12, seed=3)
    assert a.n_trials == 12 and a.dsr is not None and a.dsr.n_trials == 12
    pd.testing.assert_frame_equal(a.table, b.table)
    assert (a.table["lower"] <= a.table["upper"]).all()
    assert a.table["upper"].between(0.0, 0.004).all() and a.table["lower"].between(-0.004, 0.0).all()


def test_threshold_signal_makes_the_trader_cores_decisions() -> None:
    rng = np.random.default_rng(1)
    pred = np.round(rng.normal(0, 0.002, 2000), 3)  # many exact ties with the thresholds
    pred[::50] = np.nan
    for upper, lower, short in ((0.001, -0.001, False), (0.0, 0.0, True), (0.002, -0.001, True)):
        s = threshold_signal(pred, upper, lower)
        assert [signal(x, 0.5, -0.5, short) for x in s] == [signal(x, upper, lower, short) for x in pred]
    assert signal(0.0, 0.5, -0.5, False) == HOLD


def test_stitched_backtest_with_one_choice_is_the_plain_backtest() -> None:
    market = make_market(n=96 * 12)
    folds = walk_forward_folds(market.n, 96 * 3, 96 * 2)
    choice = Trial("good", 0.001, -0.001)
    outcomes = [FoldOutcome(f, choice, 1, 0.0, math.nan, math.nan) for f in folds]
    stitched = stitched_backtest(market, outcomes, CONFIG)
    plain = run_trial(choice, market, CONFIG, (folds[0].test_start, folds[-1].test_end))
    np.testing.assert_array_equal(stitched.equity, plain.equity)
    pd.testing.assert_frame_equal(stitched.trades, plain.trades)


def test_walk_forward_folds() -> None:
    folds = walk_forward_folds(100, train=30, test=20)
    assert [(f.train_start, f.train_end, f.test_start, f.test_end) for f in folds] == \
        [(0, 30, 30, 50), (20, 50, 50, 70), (40, 70, 70, 90), (60, 90, 90, 100)]
    assert all(f.train_start == 0 for f in walk_forward_folds(100, 30, 20, anchored=True))
    with pytest.raises(ValueError, match="too few"):
        walk_forward_folds(10, 30, 5)


def test_walk_forward_picks_each_folds_in_sample_best_and_reports_out_of_sample_only() -> None:
    market = make_market()
    spec = SearchSpec(SPACE)
    folds = walk_forward_folds(market.n, 96 * 20, 96 * 10)
    wf = walk_forward_optimize(market, spec, CONFIG, folds)
    assert wf.span == (96 * 20, market.n)
    assert len(wf.result.equity) == len(wf.open_time) == market.n - 96 * 20
    assert wf.n_trials == 32 * len(folds)
    for fold, row in zip(folds, wf.folds.itertuples(), strict=True):
        grid = grid_search(market, SPACE, CONFIG, span=(fold.train_start, fold.train_end))
        assert (row.model, row.upper, row.lower) == (grid.best.model, grid.best.upper, grid.best.lower)
        assert row.test_start == market.open_time[fold.test_start]
    assert wf.psr is not None and wf.psr.n_trials == 1
    bh = run_vectorized(market.open[wf.span[0]:], market.close[wf.span[0]:], np.full(len(wf.open_time), np.inf),
                        CONFIG, interval_ms=INTERVAL)
    np.testing.assert_array_equal(wf.benchmark.equity, bh.equity)


def test_compare_models_runs_each_model_and_all_together() -> None:
    market = make_market(n=96 * 30)
    folds = walk_forward_folds(market.n, 96 * 10, 96 * 10)
    results = compare_models(market, SearchSpec(SPACE), CONFIG, folds)
    assert list(results) == ["good", "noise", "all models"]
    assert set(results["good"].folds["model"]) == {"good"}
    assert results["all models"].n_trials == 2 * results["good"].n_trials


def test_optuna_seeds_all_count_as_trials_of_the_search() -> None:
    market = make_market(n=96 * 20)
    spec = SearchSpec(SPACE, "optuna", n_trials=6, seed=3, seeds=3)
    merged = search(market, spec, CONFIG, (0, market.n))
    alone = [optuna_search(market, SPACE, CONFIG, n_trials=6, seed=s) for s in (3, 4, 5)]
    assert merged.n_trials == 18 and merged.dsr is not None and merged.dsr.n_trials == 18
    assert merged.table["seed"].tolist() == [3] * 6 + [4] * 6 + [5] * 6
    np.testing.assert_allclose(merged.extra["seed_best"], [a.table["sharpe"].max() for a in alone])
    assert merged.table["sharpe"].max() == max(merged.extra["seed_best"])


def test_each_optuna_seed_is_a_walk_forward_variant_counted_in_the_dsr() -> None:
    market = make_market(n=96 * 30)
    folds = walk_forward_folds(market.n, 96 * 10, 96 * 10)
    results = compare_models(market, SearchSpec(SPACE, "optuna", n_trials=4, seed=7, seeds=2), CONFIG, folds)
    assert list(results) == ["good/s7", "noise/s7", "all models/s7", "good/s8", "noise/s8", "all models/s8"]
    dsr = deflate_variants(results)
    assert dsr is not None and dsr.n_trials == 6
    grid = compare_models(market, SearchSpec(SPACE, seeds=5), CONFIG, folds)
    assert list(grid) == ["good", "noise", "all models"]  # a grid is deterministic: seeds change nothing


def test_heatmap_frame() -> None:
    found = grid_search(make_market(n=96 * 5), SPACE, CONFIG)
    frame = heatmap_frame(found.table, "good")
    assert list(frame.columns) == list(SPACE.uppers)
    assert list(frame.index) == list(SPACE.lowers)
    assert np.isnan(frame.loc[0.0, 0.0]) is np.False_  # lower == upper is a valid pair


def test_market_rejects_misaligned_predictions() -> None:
    with pytest.raises(ValueError, match="rows"):
        Market(np.arange(3, dtype=np.int64), np.ones(3), np.ones(3), {"m": np.ones(2)}, 1000)
