"""Deflated Sharpe Ratio, PSR and PBO (CSCV) against the papers' worked examples and known answers."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from dope.backtest.overfitting import (
    column_sharpes,
    cscv_combinations,
    deflated_sharpe_of_moments,
    deflated_sharpe_of_trials,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    return_moments,
    sharpe_std,
)


def test_dsr_reproduces_the_papers_numerical_example() -> None:
    # Bailey & López de Prado (2014), "A numerical example": SR 2.5 a year over 5 years of daily returns
    # (T = 1250), N = 100 trials whose Sharpe ratios vary by V = 1/2 a year, skew -3, kurtosis 10.
    out = deflated_sharpe_ratio(2.5, 1250, 100, math.sqrt(0.5), periods_per_year=250, skew=-3.0, raw_kurtosis=10.0)
    assert out.expected_max_sharpe == pytest.approx(0.1132, abs=5e-5)  # the paper's SR0, per day
    assert out.expected_max_sharpe * math.sqrt(250) == pytest.approx(1.7894, abs=5e-4)  # ~1.79 a year
    assert out.dsr == pytest.approx(0.9004, abs=5e-5)  # the paper: DSR ~ 0.9004, short of 0.95
    assert out.psr_zero > 0.9999  # without the deflation the same track record looks near certain


def test_expected_max_sharpe_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    for n_trials in (10, 100, 1000):
        draws = rng.standard_normal((4000, n_trials)).max(axis=1)
        assert expected_max_sharpe(n_trials, 1.0) == pytest.approx(draws.mean(), rel=0.03)


def test_one_trial_is_not_deflated_and_more_trials_deflate_more() -> None:
    sr, n = 0.1, 500  # per period: periods_per_year=1 leaves them as they are
    one = deflated_sharpe_ratio(sr, n, 1, 0.1, periods_per_year=1)
    assert one.dsr == pytest.approx(probabilistic_sharpe_ratio(sr, n))
    dsrs = [deflated_sharpe_ratio(sr, n, k, math.sqrt(0.001), periods_per_year=1).dsr for k in (2, 10, 100, 1000)]
    assert dsrs == sorted(dsrs, reverse=True)


def test_dsr_units_are_explicit_and_impossible_inputs_are_refused() -> None:
    daily = deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=252, skew=-0.5, raw_kurtosis=6.0)
    assert daily.sharpe == pytest.approx(2.0 / math.sqrt(252))  # the result is per period
    assert daily.var_trials == pytest.approx(0.25 / 252)  # from the standard deviation given
    weekly = deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=52, skew=-0.5, raw_kurtosis=6.0)
    assert weekly.sharpe == pytest.approx(2.0 / math.sqrt(52)) and weekly.dsr != daily.dsr
    with pytest.raises(ValueError, match="excess kurtosis was probably given"):
        deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=252, raw_kurtosis=0.0)  # normal, excess
    with pytest.raises(ValueError, match="excess kurtosis"):
        deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=252, skew=-3.0, raw_kurtosis=7.0)  # 7 < 10
    with pytest.raises(ValueError, match="per period is impossible"):
        deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=1 / 252)  # the reciprocal given
    with pytest.raises(ValueError, match="a variance given where a standard deviation"):
        # a per-day Sharpe of 0.1 whose trials' *variance* 0.01 * 252 was passed as a standard deviation
        deflated_sharpe_ratio(0.1 * math.sqrt(252), 1000, 20, 2.52 * 252, periods_per_year=252)
    with pytest.raises(ValueError, match="standard deviation, so >= 0"):
        deflated_sharpe_ratio(2.0, 1000, 20, -0.1, periods_per_year=252)
    with pytest.raises(ValueError, match="periods_per_year"):
        deflated_sharpe_ratio(2.0, 1000, 20, 0.5, periods_per_year=0)


def test_dsr_of_moments_takes_the_trials_sharpe_ratios() -> None:
    rng = np.random.default_rng(8)
    m = rng.normal(0.0005, 0.01, (800, 5))
    sharpes = column_sharpes(m)
    best = return_moments(m[:, 2])
    out = deflated_sharpe_of_moments(best, sharpes)
    assert out.n_trials == 5 and out.var_trials == pytest.approx(np.var(sharpes, ddof=1))
    assert out.dsr == pytest.approx(deflated_sharpe_ratio(
        best.sharpe * math.sqrt(365), 800, 5, math.sqrt(out.var_trials * 365), periods_per_year=365,
        skew=best.skew, raw_kurtosis=best.kurtosis).dsr)
    with pytest.raises(ValueError, match="at least one trial"):
        deflated_sharpe_of_moments(best, [])


def test_psr_under_normal_returns_is_the_textbook_z() -> None:
    sr, n = 0.05, 1000
    z = sr / math.sqrt((1 + 0.5 * sr**2) / (n - 1))
    assert probabilistic_sharpe_ratio(sr, n) == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)))
    # negative skew and fat tails widen the estimate's error, so the PSR falls
    assert probabilistic_sharpe_ratio(sr, n, skew=-2, kurtosis=9) < probabilistic_sharpe_ratio(sr, n)
    with pytest.raises(ValueError, match="observations"):
        sharpe_std(sr, 1)


def test_return_moments() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0.001, 0.01, 200_000)
    m = return_moments(r)
    assert m.sharpe == pytest.approx(0.1, abs=0.01)
    assert m.skew == pytest.approx(0.0, abs=0.03)
    assert m.kurtosis == pytest.approx(3.0, abs=0.05)
    with pytest.raises(ValueError, match="NaN"):
        return_moments([0.1, np.nan, 0.2])


def test_dsr_of_trials_uses_every_column() -> None:
    rng = np.random.default_rng(3)
    m = rng.normal(0.0, 0.01, (1000, 40))
    out = deflated_sharpe_of_trials(m)
    sharpes = column_sharpes(m)
    assert out.n_trials == 40
    assert out.sharpe == pytest.approx(sharpes.max())
    assert out.var_trials == pytest.approx(np.var(sharpes, ddof=1))
    assert out.dsr < 0.9  # the best of 40 noise strategies is no discovery


def test_cscv_combinations_are_complete_and_symmetric() -> None:
    combos = cscv_combinations(16)
    assert len(combos) == math.comb(16, 8) == 12870
    as_sets = {frozenset(c) for c in combos}
    assert len(as_sets) == len(combos)
    assert all(frozenset(range(16)) - c in as_sets for c in as_sets)
    with pytest.raises(ValueError, match="even"):
        cscv_combinations(5)


def _brute_force_logits(m: np.ndarray, n_blocks: int) -> list[float]:
    """The paper's algorithm spelled out row by row (the tested code works from block sums)."""
    blocks = np.array_split(m[m.shape[0] % n_blocks:], n_blocks)
    out = []
    for combo in combinations(range(n_blocks), n_blocks // 2):
        train = np.vstack([blocks[i] for i in combo])
        test = np.vstack([blocks[i] for i in range(n_blocks) if i not in combo])
        is_sr = train.mean(axis=0) / train.std(axis=0, ddof=1)
        oos_sr = test.mean(axis=0) / test.std(axis=0, ddof=1)
        best = int(np.argmax(is_sr))
        rank = 1 + sorted(oos_sr).index(oos_sr[best])
        omega = rank / (m.shape[1] + 1)
        out.append(math.log(omega / (1 - omega)))
    return out


def test_pbo_matches_the_algorithm_spelled_out() -> None:
    rng = np.random.default_rng(4)
    m = rng.normal(0.0, 1.0, (203, 7))
    result = probability_of_backtest_overfitting(m, n_blocks=6)
    expected = _brute_force_logits(m, 6)
    assert result.n_combinations == 20
    np.testing.assert_allclose(result.logits, expected, rtol=1e-9)
    assert result.pbo == pytest.approx(np.mean(np.array(expected) <= 0))


def test_pbo_of_pure_noise_is_about_one_half() -> None:
    pbos = []
    for seed in range(8):
        m = np.random.default_rng(seed).normal(0.0, 0.01, (1600, 50))
        pbos.append(probability_of_backtest_overfitting(m, n_blocks=16).pbo)
    assert 0.4 < np.mean(pbos) < 0.6


def test_pbo_of_one_truly_superior_strategy_is_near_zero() -> None:
    m = np.random.default_rng(5).normal(0.0, 0.01, (1600, 50))
    m[:, 7] += 0.004
    result = probability_of_backtest_overfitting(m, n_blocks=16)
    assert result.pbo < 0.01
    assert result.prob_oos_loss < 0.01
    assert (result.oos_of_best > 0).all()


def test_pbo_degradation_of_noise_is_negative() -> None:
    m = np.random.default_rng(6).normal(0.0, 0.01, (1600, 50))
    result = probability_of_backtest_overfitting(m, n_blocks=16)
    assert result.degradation_slope < 0  # the better in sample, the worse out of sample
    assert result.is_best.mean() > result.oos_of_best.mean()


def test_pbo_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        probability_of_backtest_overfitting(np.full((100, 3), np.nan))
    with pytest.raises(ValueError, match="too few"):
        probability_of_backtest_overfitting(np.zeros((20, 3)), n_blocks=16)
    with pytest.raises(ValueError, match="2 trials"):
        probability_of_backtest_overfitting(np.zeros((200, 1)))


def test_flat_columns_have_zero_sharpe() -> None:
    m = np.zeros((100, 3))
    m[:, 1] = np.random.default_rng(7).normal(size=100)
    sharpes = column_sharpes(m)
    assert sharpes[0] == 0.0 and sharpes[2] == 0.0 and sharpes[1] != 0.0
