"""The walk-forward evaluation behind ``dope evaluate``: real 15-minute klines, every model, one table.

Each symbol's 2025 klines go through the default feature set, then every model through the same
walk-forward folds; the zero-return forecast is scored on exactly the same bars. ``render``
writes the markdown of ``docs/evaluation.md``, including a reading of the numbers generated
from them (so rerunning the command can never leave a stale claim in the text).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dope.features import default_feature_set, training_matrix
from dope.store.files import read_klines
from dope.training.metrics import Metrics, compute_metrics, loss_gain_t
from dope.training.walkforward import WalkForwardConfig, walk_forward_forecast
from dope.types import FloatArray

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT", "LINKUSDT")
MODELS: dict[str, dict[str, Any]] = {
    "momentum": {},
    "ridge": {"alpha": 10.0},
    "random_forest": {"n_estimators": 60, "max_depth": 6, "min_samples_leaf": 100, "max_features": 0.5,
                      "max_samples": 10_000, "n_jobs": 2},
    "lightgbm": {"n_estimators": 150, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 200,
                 "num_threads": 1},
    "lstm": {"lookback": 16, "units": 16, "epochs": 3, "batch_size": 256, "max_sequences": 10_000,
             "threads": 2},
}
"""Modest sizes so that 9 symbols x 5 models x ``folds`` fits run in minutes on 2 cores."""
YEAR_START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
YEAR_END_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


@dataclass(frozen=True)
class EvaluationSettings:
    """What ``dope evaluate`` runs."""

    data: Path
    symbols: tuple[str, ...] = SYMBOLS
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(MODELS))
    folds: int = 4
    horizon: int = 1
    start_ms: int = YEAR_START_MS
    end_ms: int = YEAR_END_MS

    def walk_forward_config(self) -> WalkForwardConfig:
        return WalkForwardConfig(n_folds=self.folds, horizon=self.horizon)


@dataclass
class SymbolResult:
    """Out-of-sample targets and each model's forecasts on them, for one symbol."""

    symbol: str
    rows: int
    y: FloatArray
    forecasts: dict[str, FloatArray]
    seconds: dict[str, float]
    missing: dict[str, str] = field(default_factory=dict)


def kline_file(data: Path, symbol: str) -> Path:
    """The 15-minute klines file of ``symbol`` in ``data``."""
    found = sorted(data.glob(f"{symbol}-15m-*.csv*")) + sorted(data.glob(f"{symbol}-15m-*.zip"))
    if not found:
        from dope.errors import UserError

        raise UserError(f"no 15m klines of {symbol} in {data} (expected {symbol}-15m-*.csv.gz)")
    return found[0]


def evaluate_symbol(settings: EvaluationSettings, symbol: str, progress: bool = False,
                    factory: Callable[[str, Mapping[str, Any]], Any] | None = None) -> SymbolResult:
    """Every model of ``settings`` through the walk-forward folds on one symbol."""
    klines = read_klines(kline_file(settings.data, symbol), symbol=symbol)
    bars = klines.frame
    bars = bars[(bars["open_time"] >= settings.start_ms) & (bars["open_time"] < settings.end_ms)]
    X, y, _ = training_matrix(bars.reset_index(drop=True), default_feature_set(klines.interval_ms),
                              settings.horizon)
    make = factory or _make_model
    outcome = SymbolResult(symbol, len(y), np.empty(0), {}, {})
    for kind, params in settings.models.items():
        began = time.perf_counter()
        try:
            result = walk_forward_forecast(X, y, partial(make, kind, params), settings.walk_forward_config(),
                                           progress=progress, description=f"{symbol} {kind}")
        except ImportError as exc:  # a model whose library is absent is reported, not fatal
            outcome.missing[kind] = str(exc)
            continue
        outcome.y, outcome.forecasts[kind] = y[result.test_mask], result.predictions[result.test_mask]
        outcome.seconds[kind] = time.perf_counter() - began
    return outcome


def _make_model(kind: str, params: Mapping[str, Any]) -> Any:
    from dope.models import make_model

    return make_model(kind, **params)


# ---- the report ------------------------------------------------------------------------------------

_HEADER = ("| symbol | model | bars | RMSE | RMSE / zero | dir. acc. | IC (Spearman) | gain t |\n"
           "|---|---|---:|---:|---:|---:|---:|---:|")


def _row(symbol: str, kind: str, y: FloatArray, pred: FloatArray) -> str:
    m = compute_metrics(y, pred)
    zero = compute_metrics(y, np.zeros(len(y)))
    ratio = m.rmse / zero.rmse if zero.rmse else math.nan
    gain = "" if kind == "zero" else _fmt(loss_gain_t(y, pred), "+.2f")
    ratio_text = "1 (baseline)" if kind == "zero" else _fmt(ratio, ".5f")
    return (f"| {symbol} | {kind} | {m.n} | {m.rmse:.3e} | {ratio_text} | {_fmt(m.directional_accuracy, '.4f')} "
            f"| {_fmt(m.ic, '+.4f')} | {gain} |")


def _fmt(value: float, spec: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def symbol_rows(result: SymbolResult) -> list[str]:
    """Table rows of one symbol: the zero baseline first, then each model."""
    rows = [_row(result.symbol, "zero", result.y, np.zeros(len(result.y)))]
    return rows + [_row(result.symbol, kind, result.y, pred) for kind, pred in result.forecasts.items()]


def pooled(results: list[SymbolResult]) -> tuple[FloatArray, dict[str, FloatArray]]:
    """Targets and forecasts of every symbol, concatenated (models present for every symbol only)."""
    kinds = [k for k in results[0].forecasts if all(k in r.forecasts for r in results)]
    return (np.concatenate([r.y for r in results]),
            {k: np.concatenate([r.forecasts[k] for r in results]) for k in kinds})


def render(results: list[SymbolResult], settings: EvaluationSettings, seconds: float) -> str:
    """The markdown document."""
    y, forecasts = pooled(results)
    pooled_rows = [_row("all", "zero", y, np.zeros(len(y)))]
    pooled_rows += [_row("all", kind, y, pred) for kind, pred in forecasts.items()]
    per_symbol = [row for r in results for row in symbol_rows(r)]
    parts = [_INTRO, "## Pooled over all symbols\n", _HEADER, *pooled_rows, "",
             "## Reading\n", reading(y, forecasts, results), "",
             "## Per symbol\n", _HEADER, *per_symbol, "", _settings(results, settings, seconds)]
    return "\n".join(parts) + "\n"


def reading(y: FloatArray, forecasts: Mapping[str, FloatArray], results: list[SymbolResult]) -> str:
    """One paragraph saying what the numbers are, generated from them."""
    metrics = {k: compute_metrics(y, p) for k, p in forecasts.items()}
    zero = compute_metrics(y, np.zeros(len(y)))
    beat = [k for k in forecasts if metrics[k].rmse < zero.rmse and loss_gain_t(y, forecasts[k]) > 2]
    lose = [k for k in forecasts if metrics[k].rmse >= zero.rmse]
    luck = {k: loss_gain_t(y, forecasts[k]) for k in forecasts if k not in beat and k not in lose}
    wins = {k: sum(compute_metrics(r.y, r.forecasts[k]).rmse < compute_metrics(r.y, 0 * r.y).rmse
                   for r in results if k in r.forecasts) for k in forecasts}
    se = 0.5 / math.sqrt(max(zero.n_directional, 1))
    das = [metrics[k].directional_accuracy for k in forecasts]
    text = (f"Over {zero.n} out-of-sample 15-minute bars, "
            + (f"{_names(beat)} beat the zero-return forecast on squared error by more than two standard errors"
               if beat else "no model beats the zero-return forecast on squared error by more than two "
               "standard errors")
            + (f"; {_names(lose)} do worse than simply predicting zero" if lose else "")
            + ("; the RMSE of " + _names([f"{k} (gain t {t:+.2f})" for k, t in luck.items()])
               + " is below zero's, by less than chance alone would explain" if luck else "")
            + f". Per symbol, the number of symbols (of {len(results)}) where each model's RMSE is below zero's: "
            + ", ".join(f"{k} {n}" for k, n in wins.items()) + ". "
            f"RMSE ratios all lie within {_spread(metrics, zero)} of 1: whatever the models find is a sliver of "
            "the variance of 15-minute returns. "
            f"Directional accuracy ranges from {min(das):.4f} to {max(das):.4f} against 0.5 for a coin toss "
            f"(one standard error is about {se:.4f} here), and the information coefficients range from "
            f"{min(m.ic for m in metrics.values()):+.4f} to {max(m.ic for m in metrics.values()):+.4f}. "
            f"The mean absolute 15-minute return is {np.mean(np.abs(y)) * 1e4:.1f} bp, of the order of a "
            "round trip's fees (about 10-20 bp on Binance spot), so even an edge that is statistically "
            "real is not evidence of a profitable strategy: that question belongs to the backtester, with "
            "costs. Read these numbers as what they are: 15-minute returns of liquid crypto pairs are close "
            "to a random walk, and a model earns its place only by beating the zero forecast out of sample.")
    return text


def _names(kinds: list[str]) -> str:
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]


def _spread(metrics: Mapping[str, Metrics], zero: Metrics) -> str:
    worst = max(abs(m.rmse / zero.rmse - 1) for m in metrics.values())
    return f"{worst * 100:.2f} %"


_INTRO = """# Walk-forward evaluation on real 15-minute klines

Generated by `dope evaluate` (rerun it to regenerate this page; settings at the end). Every number is
out of sample: each model is refitted per fold on the bars before the fold's test block (expanding
window, purged by the horizon) and scored on the block. The target is the log return of the next
15-minute bar; the **zero** row is the random-walk forecast (always 0), scored on the same bars, the
bar every model must clear.

Columns: **RMSE / zero** below 1 means the model beats the zero forecast on squared error; **dir. acc.**
counts right signs over bars whose return is not zero, a forecast of exactly 0 counting one half (so
zero scores 0.5); **IC** is the Spearman rank correlation of forecast and realised return (n/a for a
constant forecast); **gain t** is the t-statistic of the per-bar squared-error gain over zero
(Diebold-Mariano without autocorrelation correction; above about 2 is unlikely to be luck).
"""


def _settings(results: list[SymbolResult], settings: EvaluationSettings, seconds: float) -> str:
    timing = {k: sum(r.seconds.get(k, 0.0) for r in results) for k in settings.models}
    missing = sorted({f"{k} ({why})" for r in results for k, why in r.missing.items()})
    lines = [
        "## Settings\n",
        f"- Data: Binance spot 15m klines, {len(results)} symbols ({', '.join(r.symbol for r in results)}), "
        "open times in 2025 (UTC), read with `dope.store.files.read_klines`.",
        f"- Features: `default_feature_set(15m)` (version {default_feature_set(900_000).version}); the first "
        "warm-up bars of the year only feed the windows.",
        f"- Walk-forward: {settings.folds} folds of equal test blocks at the end of each symbol's rows, expanding "
        f"window, horizon {settings.horizon} bar, purge {settings.horizon} row(s), no subsampling beyond the "
        "models' own settings.",
        "- Models (DOPE defaults elsewhere): " + "; ".join(f"`{k}` {dict(p) or 'defaults'}"
                                                           for k, p in settings.models.items()) + ".",
        f"- Run time: {seconds:.0f} s on {platform.machine()} (fit + predict per model, all symbols: "
        + ", ".join(f"{k} {s:.0f} s" for k, s in timing.items()) + ").",
    ]
    if missing:
        lines.append(f"- Not evaluated (library missing): {', '.join(missing)}.")
    return "\n".join(lines)
