"""Fitting the synthetic market on real Binance data (15m klines + the short spot trade captures).

Volatility is fitted on 15-minute klines and scaled down to 10 s with the
square-root-of-time rule (``var_10s = var_15m * 10 / 900``: returns are close to
uncorrelated, so variances add up); the log-volatility components' time constants
are in seconds, so they hold at any step. Trade rate, seasonality, mean trade size,
the taker-buy share and its link to returns come from the klines too; bursts
(dispersion of 10 s trade counts) and the spread of trade sizes need trades and
come from the trade captures (symbols without a capture take BTCUSDT's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.bars.vectorized import TradeArrays
from dope.errors import UserError
from dope.market.synthetic_model import hour_of_week
from dope.market.synthetic_params import SymbolParams, SyntheticParams
from dope.store.files import read_klines, read_trades
from dope.types import FloatArray

VOL_TAUS_S: Final = [1_800.0, 14_400.0, 129_600.0, 1_296_000.0]
REFERENCE: Final = "BTCUSDT"
_BAR_S: Final = 900.0
_MAX_LAG: Final = 2_880
_DOF_GRID: Final = np.arange(2.2, 40.0, 0.05)
SCALING_RULE: Final = "var_10s = var_15m * 10/900 (square root of time); time constants kept in seconds"


class CalibrationError(UserError, ValueError):
    """The real data needed for a fit is missing or unusable."""


def grid_of(values: npt.ArrayLike) -> float:
    """The finest decimal step of numbers read from decimal strings (61837.63 -> 0.01).

    A float's shortest round-trip form has the digits of the string it was parsed from (up to 15
    significant digits, far more than Binance's), so the decimals are counted on that.
    """
    decimals = [len(np.format_float_positional(v, unique=True, trim="-").partition(".")[2])
                for v in np.unique(np.asarray(values, dtype=np.float64))]
    return float(10.0 ** -max(decimals))


def log_range(klines: pd.DataFrame) -> FloatArray:
    """log(high / low) per bar, NaN where the range is zero (halted market)."""
    ratio = (klines["high"] / klines["low"]).to_numpy(dtype=np.float64)
    return np.where(ratio > 1.0, np.log(np.where(ratio > 1.0, ratio, 2.0)), np.nan)


def seasonal_profile(values: FloatArray, how: np.ndarray) -> FloatArray:
    """Mean of ``values`` per hour of the week over its overall mean (168 multipliers)."""
    frame = pd.DataFrame({"v": values, "h": how}).dropna()
    means = frame.groupby("h")["v"].mean().reindex(range(168)).fillna(frame["v"].mean())
    return (means / frame["v"].mean()).to_numpy(dtype=np.float64)


def autocovariance(values: FloatArray, max_lag: int) -> FloatArray:
    """Autocovariance at lags 0..max_lag of a series with NaNs (pairs with a NaN are skipped)."""
    x = values - np.nanmean(values)
    ok = ~np.isnan(x)
    x = np.where(ok, x, 0.0)
    n = int(2 ** math.ceil(math.log2(2 * len(x))))
    sums = np.fft.irfft(np.abs(np.fft.rfft(x, n)) ** 2, n)[: max_lag + 1]
    pairs = np.fft.irfft(np.abs(np.fft.rfft(ok.astype(float), n)) ** 2, n)[: max_lag + 1]
    return np.asarray(sums / np.maximum(np.round(pairs), 1.0), dtype=np.float64)


def nonnegative_lstsq(basis: FloatArray, target: FloatArray) -> FloatArray:
    """Least squares with all coefficients >= 0 (active set: drop the most negative, refit)."""
    active = list(range(basis.shape[1]))
    coef = np.zeros(basis.shape[1])
    while active:
        sol = np.linalg.lstsq(basis[:, active], target, rcond=None)[0]
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef


def fit_log_vol(log_vol: FloatArray, taus: list[float] = VOL_TAUS_S) -> FloatArray:
    """Variances of AR(1) log-volatility components with time constants ``taus`` (seconds), from
    the autocovariance at lags >= 1 of a noisy log-volatility proxy sampled every 15 minutes."""
    acov = autocovariance(log_vol, _MAX_LAG)[1:]
    lags = np.arange(1, _MAX_LAG + 1) * _BAR_S
    basis = np.exp(-lags[:, None] / np.asarray(taus)[None, :])
    return nonnegative_lstsq(basis, acov)


def fit_dof(standardized: FloatArray) -> float:
    """Maximum-likelihood degrees of freedom of a unit-variance Student-t."""
    e = standardized[np.isfinite(standardized)]
    e = e / e.std()
    best, best_ll = 30.0, -np.inf
    for nu in _DOF_GRID:
        scale2 = (nu - 2.0) / nu
        ll = len(e) * (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi * scale2))
        ll -= (nu + 1) / 2 * float(np.sum(np.log1p(e**2 / (nu * scale2))))
        if ll > best_ll:
            best, best_ll = float(nu), ll
    return best


def standardized_returns(klines: pd.DataFrame) -> FloatArray:
    """15m log returns over a local volatility (Parkinson, 8 neighbouring bars, the bar itself left out)."""
    ret = np.log(klines["close"]).diff().to_numpy(dtype=np.float64)
    park = pd.Series(log_range(klines) ** 2 / (4.0 * math.log(2.0)))
    around = (park.rolling(9, center=True, min_periods=4).sum() - park.fillna(0.0)) / 8.0
    return np.asarray(ret / np.sqrt(around.to_numpy()), dtype=np.float64)


def logit(p: FloatArray) -> FloatArray:
    """log(p / (1 - p))."""
    return np.asarray(np.log(p / (1.0 - p)), dtype=np.float64)


def slope(x: FloatArray, y: FloatArray) -> float:
    """Least-squares slope of y on x (NaN pairs skipped)."""
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def ar_time_constant(series: FloatArray, lag_s: float, lo: float, hi: float) -> float:
    """Time constant (s) of an AR(1) from its lag-1 autocorrelation, clipped to [lo, hi]."""
    acov = autocovariance(series, 1)
    rho = acov[1] / acov[0]
    return float(np.clip(-lag_s / math.log(rho), lo, hi)) if 0.0 < rho < 1.0 else lo


def fit_klines(klines: pd.DataFrame) -> dict[str, float | list[float]]:
    """The fields of :class:`SymbolParams` that 15m klines determine."""
    how = hour_of_week(klines["open_time"].to_numpy(dtype=np.int64))
    ret = np.log(klines["close"]).diff().to_numpy(dtype=np.float64)
    lr = log_range(klines)
    vol_season = np.sqrt(seasonal_profile(lr**2, how))
    log_vol = np.log(lr) - np.log(vol_season[how])
    count = klines["count"].to_numpy(dtype=np.float64)
    count_season = seasonal_profile(count, how)
    log_count = np.log(np.where(count > 0, count, np.nan)) - np.log(count_season[how])
    return {
        "tick_size": grid_of(klines[["open", "high", "low", "close"]].to_numpy()),
        "step_size": grid_of(klines["volume"]), "start_price": float(klines["close"].iloc[-1]),
        "sigma_10s": float(np.nanstd(ret) * math.sqrt(10.0 / _BAR_S)),
        "tail_dof": fit_dof(standardized_returns(klines)),
        "vol_taus_s": list(VOL_TAUS_S), "vol_vars": fit_log_vol(log_vol).tolist(),
        "vol_season": (vol_season / np.sqrt(np.mean(vol_season**2))).tolist(),
        "trade_rate": float(count.mean() / _BAR_S), "count_season": (count_season / count_season.mean()).tolist(),
        "count_vol_elasticity": slope(log_vol, log_count),
        "mean_trade_size": float(klines["volume"].sum() / count.sum()),
        **fit_imbalance(klines),
    }


def fit_imbalance(klines: pd.DataFrame) -> dict[str, float]:
    """Taker-buy share, its response to returns and its persistent part, scaled to 10 s steps.

    A 15m share averages 90 steps: its logit moves ``kappa * e / sqrt(90)`` for a 15m
    standardized return ``e``, hence ``kappa = slope * sqrt(90)``.
    """
    volume = klines["volume"].to_numpy(dtype=np.float64)
    taker = klines["taker_buy_volume"].to_numpy(dtype=np.float64)
    share = np.where((volume > 0) & (taker > 0) & (taker < volume), taker / np.where(volume > 0, volume, 1), np.nan)
    e = standardized_returns(klines)
    y = logit(share)
    b = slope(e, y)
    ok = np.isfinite(e) & np.isfinite(y)
    resid = np.where(ok, y - np.nanmean(y) - b * np.where(ok, e, 0.0), np.nan)
    tau = ar_time_constant(resid, _BAR_S, 60.0, 86_400.0)
    return {
        "taker_buy_share": float(taker.sum() / volume.sum()),
        "imbalance_return_beta": float(b * math.sqrt(_BAR_S / 10.0)),
        "imbalance_var": float(np.nanvar(resid)) / averaged_variance_ratio(tau, _BAR_S),
        "imbalance_tau_s": tau,
    }


def averaged_variance_ratio(tau: float, window: float) -> float:
    """Var(mean of an AR(1) over ``window`` s) / Var(the AR(1)), time constant ``tau`` s."""
    x = window / tau
    return 2.0 / x * (1.0 - (1.0 - math.exp(-x)) / x)


def fit_trades(trades: TradeArrays) -> dict[str, float]:
    """Burst variance/time constant of the 10 s trade counts and the spread of log trade sizes."""
    window = trades.time // 10_000
    counts = np.bincount(window - window.min()).astype(np.float64)[1:-1]
    mean = counts.mean()
    fano = counts.var() / mean
    burst_var = math.log1p(max(fano - 1.0, 0.0) / mean)
    acov = autocovariance(counts, 1)
    rho_counts = max(acov[1] / acov[0], 1e-3)
    rho = math.log1p(rho_counts * math.expm1(burst_var)) / burst_var if burst_var > 0 else 0.5
    return {
        "burst_var": burst_var, "burst_tau_s": float(np.clip(-10.0 / math.log(min(rho, 0.99)), 2.0, 600.0)),
        "size_log_sd": float(np.log(trades.qty).std()),
    }


def leader_corr(own: pd.DataFrame, leader: pd.DataFrame) -> float:
    """Correlation of two symbols' standardized 15m returns on their common bars."""
    a = pd.Series(standardized_returns(own), index=own["open_time"])
    b = pd.Series(standardized_returns(leader), index=leader["open_time"])
    both = pd.concat([a, b], axis=1, join="inner").replace([np.inf, -np.inf], np.nan).dropna()
    both = both[(both.abs() < 20).all(axis=1)]
    return float(np.corrcoef(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())[0, 1])


def calibrate(data_dir: Path) -> SyntheticParams:
    """Fit every symbol that has 15m klines under ``data_dir`` (``../shared/data/binance``)."""
    files = sorted((data_dir / "klines" / "15m").glob("*-15m-*.csv.gz"))
    if not files:
        raise CalibrationError(f"no 15m kline files (*-15m-*.csv.gz) under {data_dir / 'klines' / '15m'}")
    klines = {f.name.split("-")[0]: read_klines(f).frame for f in files}
    if REFERENCE not in klines:
        raise CalibrationError(f"the reference symbol {REFERENCE} has no 15m klines in {data_dir}")
    trade_fits = {s: fit_trades(read_trades(f)) for s in klines
                  for f in sorted((data_dir / "trades" / "spot").glob(f"{s}-trades-spot-*.csv.gz"))[:1]}
    symbols = {s: _symbol_params(s, klines, trade_fits) for s in klines}
    return SyntheticParams(symbols=symbols, source=str(data_dir.name), scaling_rule=SCALING_RULE)


def _symbol_params(symbol: str, klines: dict[str, pd.DataFrame],
                   trade_fits: dict[str, dict[str, float]]) -> SymbolParams:
    fields: dict[str, object] = {**fit_klines(klines[symbol]), **trade_fits.get(symbol, trade_fits[REFERENCE])}
    if symbol != REFERENCE:
        fields.update(leader=REFERENCE, leader_corr=leader_corr(klines[symbol], klines[REFERENCE]))
    return SymbolParams(**fields)  # type: ignore[arg-type]
