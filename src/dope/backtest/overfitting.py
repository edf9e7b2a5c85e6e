"""Statistics that say how likely a backtest result is to be overfit.

* The **Probabilistic Sharpe Ratio** (Bailey & López de Prado 2012): the probability that the true Sharpe
  ratio exceeds a benchmark, given the sample length, skewness and kurtosis of the returns.
* The **expected maximum Sharpe ratio** of ``N`` independent trials with no skill (the "false strategy
  theorem"), and the **Deflated Sharpe Ratio** (Bailey & López de Prado 2014): the PSR against that benchmark.
* The **Probability of Backtest Overfitting** by combinatorially symmetric cross-validation (CSCV; Bailey,
  Borwein, López de Prado & Zhu 2017), with the performance degradation and the probability of loss.

Units: the DSR is computed from Sharpe ratios per observation (period). ``deflated_sharpe_ratio`` takes
annualised figures and the ``periods_per_year`` they were annualised with, and the *standard deviation*
of the trials' Sharpe ratios; ``deflated_sharpe_of_trials`` and ``deflated_sharpe_of_moments`` take the
returns themselves (or their moments), so they need no units. Kurtosis is the raw (Pearson) kurtosis,
3 for normal returns, named ``raw_kurtosis`` where it is an argument; inputs that cannot be right (raw
kurtosis below ``1 + skew**2``, as excess kurtosis often is; a Sharpe ratio above 1 per period) are refused
with a ``ValueError`` that says what was probably meant. The ``DeflatedSharpe`` result holds per-period
figures.

Example (the numerical example of the DSR paper: SR 2.5 a year, 5 years of daily returns, 100 trials whose
Sharpe ratios have a variance of 0.5 a year, i.e. a standard deviation of 0.7071, skewness -3, kurtosis 10):

>>> round(deflated_sharpe_ratio(2.5, 1250, 100, 0.5**0.5, periods_per_year=250, skew=-3, raw_kurtosis=10).dsr, 4)
0.9004
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from dope.types import FloatArray

EULER_GAMMA: Final = 0.5772156649015329
MAX_PERIOD_SHARPE: Final = 1.0
"""A mean return above its standard deviation every period: no strategy worth deflating has it, so a
per-period Sharpe ratio above this means the units are wrong."""
_NORMAL: Final = NormalDist()


@dataclass(frozen=True)
class ReturnMoments:
    """Per-observation Sharpe ratio, skewness, raw kurtosis and number of observations of a return series."""

    sharpe: float
    skew: float
    kurtosis: float
    n: int


class Moments(Protocol):
    """Per-period Sharpe ratio, skewness, raw kurtosis and length of a return series (``ReturnMoments``, or
    the ``DeflatedSharpe`` computed from one)."""

    @property
    def sharpe(self) -> float: ...

    @property
    def skew(self) -> float: ...

    @property
    def kurtosis(self) -> float: ...

    @property
    def n(self) -> int: ...


@dataclass(frozen=True)
class DeflatedSharpe:
    """The Deflated Sharpe Ratio and what it was computed from (Sharpe ratios per observation)."""

    dsr: float
    sharpe: float
    expected_max_sharpe: float
    psr_zero: float
    n_trials: int
    var_trials: float
    skew: float
    kurtosis: float
    n: int


@dataclass(frozen=True)
class PBOResult:
    """Probability of Backtest Overfitting by CSCV, with the degradation and probability of loss.

    ``logits``, ``is_best`` and ``oos_of_best`` hold one value per combination: the logit of the
    out-of-sample relative rank of the in-sample best trial, its in-sample and its out-of-sample
    performance. ``degradation_slope``/``intercept``/``r2`` regress ``oos_of_best`` on ``is_best``.
    """

    pbo: float
    prob_oos_loss: float
    degradation_slope: float
    degradation_intercept: float
    degradation_r2: float
    n_blocks: int
    n_combinations: int
    n_trials: int
    logits: FloatArray
    is_best: FloatArray
    oos_of_best: FloatArray


def return_moments(returns: npt.ArrayLike) -> ReturnMoments:
    """Sharpe ratio (mean / sample std), skewness and raw kurtosis of a return series (NaNs are an error)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 3:
        raise ValueError(f"need a 1-d return series of at least 3 observations, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or infinite values")
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    if m2 == 0.0:
        return ReturnMoments(0.0, 0.0, 3.0, r.size)
    skew = float(np.mean(d**3)) / m2**1.5
    kurt = float(np.mean(d**4)) / m2**2
    return ReturnMoments(float(r.mean() / r.std(ddof=1)), skew, kurt, r.size)


def sharpe_std(sharpe: float, n: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """Standard error of an estimated Sharpe ratio under non-normal returns (Mertens 2002)."""
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    var = (1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2) / (n - 1)
    if var <= 0.0:
        raise ValueError(f"skew {skew} and kurtosis {kurtosis} give a non-positive Sharpe variance")
    return math.sqrt(var)


def probabilistic_sharpe_ratio(sharpe: float, n: int, skew: float = 0.0, kurtosis: float = 3.0,
                               benchmark: float = 0.0) -> float:
    """P(true Sharpe > ``benchmark``) given the estimate ``sharpe`` from ``n`` observations."""
    return _NORMAL.cdf((sharpe - benchmark) / sharpe_std(sharpe, n, skew, kurtosis))


def expected_max_sharpe(n_trials: int, var_trials: float, mean_trials: float = 0.0) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent trials (no selection for one trial)."""
    if n_trials < 1 or var_trials < 0.0:
        raise ValueError(f"need n_trials >= 1 and var_trials >= 0, got {n_trials} and {var_trials}")
    if n_trials == 1:
        return mean_trials
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) \
        + EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return mean_trials + math.sqrt(var_trials) * z


def deflated_sharpe_ratio(sharpe: float, n: int, n_trials: int, sharpe_sd_trials: float, *,
                          periods_per_year: float, skew: float = 0.0, raw_kurtosis: float = 3.0) -> DeflatedSharpe:
    """The DSR of an annualised ``sharpe`` from ``n`` periods, selected among ``n_trials`` whose annualised
    Sharpe ratios have the standard deviation ``sharpe_sd_trials`` (not the variance).

    Both are annualised with ``periods_per_year`` (252 or 365 for daily returns, 52 weekly ...); ``skew`` and
    ``raw_kurtosis`` are those of the selected strategy's per-period returns.
    """
    if not periods_per_year > 0.0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    if not sharpe_sd_trials >= 0.0:
        raise ValueError(f"sharpe_sd_trials is a standard deviation, so >= 0, got {sharpe_sd_trials}")
    root = math.sqrt(periods_per_year)
    _check_units(sharpe / root, (sharpe_sd_trials / root) ** 2, skew, raw_kurtosis)
    return _deflate(sharpe / root, n, n_trials, (sharpe_sd_trials / root) ** 2, skew, raw_kurtosis)


def deflated_sharpe_of_moments(selected: Moments, trial_sharpes: npt.ArrayLike) -> DeflatedSharpe:
    """DSR of the ``selected`` strategy's returns (their moments) among trials with these per-period Sharpe
    ratios (``column_sharpes`` or ``return_moments(...).sharpe`` of every trial, the selected one included)."""
    sharpes = np.asarray(trial_sharpes, dtype=np.float64).ravel()
    if sharpes.size < 1 or not np.isfinite(sharpes).all():
        raise ValueError(f"need the finite Sharpe ratios of at least one trial, got {sharpes}")
    var = float(np.var(sharpes, ddof=1)) if sharpes.size > 1 else 0.0
    return _deflate(selected.sharpe, selected.n, sharpes.size, var, selected.skew, selected.kurtosis)


def _deflate(sharpe: float, n: int, n_trials: int, var_trials: float, skew: float,
             raw_kurtosis: float) -> DeflatedSharpe:
    """The DSR from per-period figures: PSR of ``sharpe`` against the expected maximum of unskilled trials."""
    sr0 = expected_max_sharpe(n_trials, var_trials)
    dsr = probabilistic_sharpe_ratio(sharpe, n, skew, raw_kurtosis, benchmark=sr0)
    psr0 = probabilistic_sharpe_ratio(sharpe, n, skew, raw_kurtosis)
    return DeflatedSharpe(dsr, sharpe, sr0, psr0, n_trials, var_trials, skew, raw_kurtosis, n)


def _check_units(sharpe: float, var_trials: float, skew: float, raw_kurtosis: float) -> None:
    if raw_kurtosis < 1.0 + skew**2 - 1e-9:
        raise ValueError(f"raw kurtosis {raw_kurtosis} is below 1 + skew^2 = {1 + skew**2:.4g}, which no "
                         f"distribution has: an excess kurtosis was probably given (raw = excess + 3 = "
                         f"{raw_kurtosis + 3:.4g})")
    for name, value in (("Sharpe ratio", abs(sharpe)), ("standard deviation of the trials' Sharpe ratios",
                                                        math.sqrt(var_trials))):
        if value > MAX_PERIOD_SHARPE:
            raise ValueError(f"a {name} of {value:.4g} per period is impossible for returns: check the units "
                             "(annualised figures need the right periods_per_year; a variance given where a "
                             "standard deviation is meant inflates it)")


def deflated_sharpe_of_trials(trial_returns: npt.ArrayLike, selected: int | None = None) -> DeflatedSharpe:
    """DSR of the selected (default: best Sharpe) column of a T x N matrix of per-period trial returns.

    The number of trials is the number of columns; their Sharpe ratios give the variance.
    """
    m = _matrix(trial_returns)
    sharpes = column_sharpes(m)
    best = int(np.argmax(sharpes)) if selected is None else selected
    return deflated_sharpe_of_moments(return_moments(m[:, best]), sharpes)


def column_sharpes(matrix: npt.ArrayLike) -> FloatArray:
    """Per-observation Sharpe ratio of each column (0 where a column does not vary)."""
    m = _matrix(matrix)
    return _sharpe_from_sums(m.sum(axis=0), (m**2).sum(axis=0), m.shape[0])


def cscv_combinations(n_blocks: int) -> list[tuple[int, ...]]:
    """All ``C(S, S/2)`` choices of in-sample blocks; the complement of each is also in the list."""
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"the number of blocks must be even and >= 2, got {n_blocks}")
    return list(combinations(range(n_blocks), n_blocks // 2))


def probability_of_backtest_overfitting(performance: npt.ArrayLike, n_blocks: int = 16) -> PBOResult:
    """PBO by CSCV of a T x N matrix of per-period returns (rows in time order, one column per trial).

    The rows are cut into ``n_blocks`` contiguous blocks of equal size (the first ``T mod S`` rows are
    dropped); for every half of the blocks, the trial with the best in-sample Sharpe ratio is ranked
    out of sample. PBO is the share of combinations where it ranks at or below the median (logit <= 0).
    """
    m = _matrix(performance)
    if m.shape[1] < 2:
        raise ValueError("PBO needs at least 2 trials (columns)")
    sums, squares, size = _block_sums(m, n_blocks)
    chosen = _membership(cscv_combinations(n_blocks), n_blocks)
    is_perf = _sharpe_from_sums(chosen @ sums, chosen @ squares, size * n_blocks // 2)
    oos_perf = _sharpe_from_sums((1 - chosen) @ sums, (1 - chosen) @ squares, size * n_blocks // 2)
    best = np.argmax(is_perf, axis=1)
    rows = np.arange(best.size)
    logits = _logits(_relative_ranks(oos_perf, best), m.shape[1])
    return _pbo_result(logits, is_perf[rows, best], oos_perf[rows, best], n_blocks, m.shape[1])


def _pbo_result(logits: FloatArray, is_best: FloatArray, oos_best: FloatArray, n_blocks: int,
                n_trials: int) -> PBOResult:
    slope, intercept, r2 = _regression(is_best, oos_best)
    return PBOResult(pbo=float(np.mean(logits <= 0.0)), prob_oos_loss=float(np.mean(oos_best < 0.0)),
                     degradation_slope=slope, degradation_intercept=intercept, degradation_r2=r2,
                     n_blocks=n_blocks, n_combinations=logits.size, n_trials=n_trials,
                     logits=logits, is_best=is_best, oos_of_best=oos_best)


def _matrix(values: npt.ArrayLike) -> FloatArray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"need a 2-d T x N matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("the performance matrix contains NaN or infinite values")
    return m


def _block_sums(m: FloatArray, n_blocks: int) -> tuple[FloatArray, FloatArray, int]:
    """Per-block sums and sums of squares (S x N) of equal blocks, and the block size."""
    size = m.shape[0] // n_blocks
    if size < 2:
        raise ValueError(f"{m.shape[0]} rows are too few for {n_blocks} blocks of at least 2 rows")
    blocks = m[m.shape[0] - size * n_blocks:].reshape(n_blocks, size, m.shape[1])
    return blocks.sum(axis=1), (blocks**2).sum(axis=1), size


def _membership(combos: list[tuple[int, ...]], n_blocks: int) -> FloatArray:
    out = np.zeros((len(combos), n_blocks))
    for i, combo in enumerate(combos):
        out[i, list(combo)] = 1.0
    return out


def _sharpe_from_sums(total: FloatArray, squares: FloatArray, n: int) -> FloatArray:
    """Sharpe ratios (mean / sample std) from sums and sums of squares; 0 where the std vanishes."""
    mean = total / n
    var = np.maximum(squares - n * mean**2, 0.0) / (n - 1)
    flat = var <= 1e-20 * (mean**2 + 1e-300)
    return np.asarray(np.where(flat, 0.0, mean / np.sqrt(np.where(flat, 1.0, var))), dtype=np.float64)


def _relative_ranks(oos: FloatArray, best: npt.NDArray[np.intp]) -> FloatArray:
    """Rank (1..N, ties averaged) of each combination's chosen trial among its out-of-sample results."""
    chosen = oos[np.arange(best.size), best][:, None]
    below = (oos < chosen).sum(axis=1)
    equal = (oos == chosen).sum(axis=1)
    return np.asarray(below + (equal + 1) / 2.0, dtype=np.float64)


def _logits(ranks: FloatArray, n_trials: int) -> FloatArray:
    omega = ranks / (n_trials + 1.0)
    return np.asarray(np.log(omega / (1.0 - omega)), dtype=np.float64)


def _regression(x: FloatArray, y: FloatArray) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of ``y`` on ``x`` (slope 0 when ``x`` does not vary)."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        return 0.0, float(y.mean()), 0.0
    slope = float(dx @ (y - y.mean())) / sxx
    resid = y - (y.mean() + slope * dx)
    syy = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else 0.0
    return slope, float(y.mean() - slope * x.mean()), r2
