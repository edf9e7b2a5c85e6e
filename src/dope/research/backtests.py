"""Backtests and threshold optimisation of predictions against bars, with the in-sample guard.

This is what ``dope backtest``, ``dope optimize`` and ``dope report`` run. Predictions are a frame (or a
Parquet/CSV file) of ``open_time`` and ``prediction``; rows carrying ``trained_until_ms`` (written by
``dope predict`` and by :func:`~dope.research.walk_forward`) for bars opening before it are in sample
and refused unless ``allow_in_sample=True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from dope import __version__
from dope.backtest import BacktestConfig, BacktestResult
from dope.backtest.parallel import Runner, SerialRunner
from dope.backtest.report import ReportData, load_report_data, report_data, save_report_data, write_report
from dope.errors import UserError
from dope.research.data import bars_interval
from dope.timeparse import parse_duration

log = logging.getLogger(__name__)

PredictionsLike = pd.DataFrame | str | Path
Engine = Literal["vectorized", "event"]


# ---- predictions and the in-sample guard --------------------------------------------------------------

def read_predictions(path: str | Path, allow_in_sample: bool = False) -> pd.DataFrame:
    """A predictions file (Parquet, or CSV) as a checked frame of ``open_time`` and ``prediction``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such predictions file")
    try:
        frame = pd.read_csv(path) if path.suffix in {".csv", ".gz"} else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise UserError(f"{path}: cannot read predictions: {exc}") from None
    return check_predictions(frame, str(path), allow_in_sample)


def check_predictions(frame: pd.DataFrame, source: str = "predictions",
                      allow_in_sample: bool = False) -> pd.DataFrame:
    """``frame`` as ``open_time`` (int64) and ``prediction`` (float64), after the checks: both columns
    present, no open time twice, no row in sample (see :func:`check_out_of_sample`)."""
    missing = {"open_time", "prediction"} - set(frame.columns)
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(sorted(missing))} (need open_time, prediction)")
    if frame["open_time"].duplicated().any():
        raise UserError(f"{source}: open_time {frame['open_time'][frame['open_time'].duplicated()].iloc[0]} "
                        "appears more than once")
    check_out_of_sample(source, frame, allow_in_sample)
    return frame[["open_time", "prediction"]].astype({"open_time": "int64", "prediction": "float64"})


def check_out_of_sample(source: str, frame: pd.DataFrame, allow_in_sample: bool) -> None:
    """Refuse (or, with ``allow_in_sample``, warn about) rows opening before their ``trained_until_ms``.

    A frame (or a row) without ``trained_until_ms`` is of unknown provenance: it is used, with a
    warning saying so.
    """
    until = (pd.to_numeric(frame["trained_until_ms"], errors="coerce") if "trained_until_ms" in frame.columns
             else pd.Series(float("nan"), index=frame.index))
    unknown = int(until.isna().sum())
    if unknown:
        log.warning("%s: %d of %d prediction(s) have no trained_until_ms (not written by `dope predict`): "
                    "provenance unknown, nothing shows they are out of sample", source, unknown, len(frame))
    inside = frame["open_time"].astype("int64") < until
    if not inside.any():
        return
    first = frame.assign(trained_until_ms=until)[inside].sort_values("open_time").iloc[0]
    model = first["model_id"] if "model_id" in frame.columns else "an unnamed model"
    trained_until = int(first["trained_until_ms"])
    message = (f"{source}: {int(inside.sum())} prediction(s) for bars opening before their model finished "
               f"training, the first at {_iso(int(first['open_time']))} by {model}, trained until "
               f"{_iso(trained_until)} (trained_until_ms {trained_until}): in sample")
    if not allow_in_sample:
        raise UserError(f"{message}; pass --allow-in-sample (allow_in_sample=True in dope.research) "
                        "to use them anyway")
    log.warning("%s (used: allow_in_sample)", message)


def _iso(time_ms: int) -> str:
    return pd.Timestamp(time_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _predictions(predictions: PredictionsLike, allow_in_sample: bool, source: str = "predictions") -> pd.DataFrame:
    if isinstance(predictions, pd.DataFrame):
        return check_predictions(predictions, source, allow_in_sample)
    return read_predictions(predictions, allow_in_sample)


def join_predictions(bars: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Bars with their prediction (NaN where there is none: those bars hold)."""
    joined = bars.merge(predictions, on="open_time", how="left", validate="one_to_one")
    unmatched = int((~predictions["open_time"].isin(bars["open_time"])).sum())
    if unmatched:
        log.warning("%d predictions have no bar in the range (ignored)", unmatched)
    return joined


def _checked_bars(bars: pd.DataFrame) -> int:
    if len(bars) < 2:
        symbol = f"{bars['symbol'].iloc[0]}: " if "symbol" in bars.columns and len(bars) else ""
        raise UserError(f"{symbol}{len(bars)} bar(s) in that range; a backtest needs at least 2")
    return bars_interval(bars)


# ---- one backtest -------------------------------------------------------------------------------------

@dataclass
class Backtest:
    """A threshold backtest beside the baselines: ``results`` holds ``strategy``, ``buy_and_hold``, ``zero``."""

    config: BacktestConfig
    interval_ms: int
    results: dict[str, BacktestResult]

    @property
    def metrics(self) -> pd.DataFrame:
        """One column per run, one row per metric (the table ``dope backtest`` prints)."""
        return pd.DataFrame({name: r.metrics for name, r in self.results.items()})

    @property
    def equity(self) -> pd.DataFrame:
        """Equity at every bar's close, one column per run, indexed by open time (ms)."""
        first = self.results["strategy"]
        return pd.DataFrame({name: r.equity for name, r in self.results.items()},
                            index=pd.Index(first.times, name="open_time"))

    @property
    def trades(self) -> pd.DataFrame:
        """The strategy's trades (entry and exit bars, times, prices, fees, P&L)."""
        return self.results["strategy"].trades

    def plot(self) -> Any:
        """A Bokeh figure of the runs' equity (``bokeh.io.show(bt.plot())`` in a notebook)."""
        from dope.plots import equity_figure

        curves = {name: r.equity for name, r in self.results.items()}
        return equity_figure(self.results["strategy"].times, curves, title="Equity")


def backtest(bars: pd.DataFrame, predictions: PredictionsLike, *, upper: float = 0.0, lower: float = 0.0,
             fee: float = 0.001, slippage_bps: float = 0.0, short: bool = False, cash: float = 10_000.0,
             fraction: float = 1.0, engine: Engine = "vectorized", allow_in_sample: bool = False) -> Backtest:
    """Trade ``predictions`` on ``bars`` (buy above ``upper``, sell below ``lower``) beside buy and hold
    and the zero forecast. This is ``dope backtest``; both engines give the same answer."""
    from dope.backtest import buy_and_hold, run_event, run_vectorized, zero_baseline

    interval = _checked_bars(bars)
    joined = join_predictions(bars, _predictions(predictions, allow_in_sample))
    config = _config(upper, lower, fee, slippage_bps, short, cash, fraction)
    o, c, t = joined["open"].to_numpy(), joined["close"].to_numpy(), joined["open_time"].to_numpy()
    p = joined["prediction"].to_numpy()
    try:
        main = (run_event(joined, p, config, interval_ms=interval) if engine == "event"
                else run_vectorized(o, c, p, config, times=t, interval_ms=interval))
        return Backtest(config, interval, {
            "strategy": main, "buy_and_hold": buy_and_hold(o, c, config, times=t, interval_ms=interval),
            "zero": zero_baseline(o, c, config, times=t, interval_ms=interval)})
    except ValueError as exc:
        raise UserError(f"bad bars: {exc}") from None


def _config(upper: float, lower: float, fee: float, slippage_bps: float, short: bool, cash: float = 10_000.0,
            fraction: float = 1.0) -> BacktestConfig:
    try:
        return BacktestConfig(upper=upper, lower=lower, fee_rate=fee, slippage_bps=slippage_bps,
                              allow_short=short, initial_cash=cash, fraction=fraction)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def json_number(value: float) -> float | None:
    """A metric for JSON: NaN and infinities as None."""
    return None if math.isnan(value) or math.isinf(value) else value


# ---- threshold optimisation ---------------------------------------------------------------------------

def parse_values(text: str) -> tuple[float, ...]:
    """``START:STOP:COUNT`` (evenly spaced) or a comma-separated list of numbers.

    >>> parse_values("-0.002:0:3"), parse_values("-0.001,0")
    ((-0.002, -0.001, 0.0), (-0.001, 0.0))
    """
    from dope.backtest.optimize import linspace_values

    try:
        if ":" in text:
            start, stop, count = text.split(":")
            return linspace_values(float(start), float(stop), int(count))
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"bad threshold list {text!r}: use START:STOP:COUNT or a,b,c") from None


@dataclass
class Optimization:
    """Walk-forward threshold optimisation of one or more models, and a search over the whole span.

    ``results``: each variant's stitched out-of-sample run (one per model, one of all models; per seed for
    Optuna); ``grid``: the in-sample search over the whole span (heatmaps, DSR with every trial, PBO);
    ``dsr``: the Deflated Sharpe Ratio across the variants; ``settings``: what was run.
    """

    results: dict[str, Any]
    grid: Any
    dsr: Any
    report_data: ReportData
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def comparison(self) -> pd.DataFrame:
        """One row per variant and one for buy and hold: out-of-sample metrics, PSR, trials, PBO."""
        return self.report_data.comparison

    @property
    def overfitting(self) -> Mapping[str, Mapping[str, Any]]:
        """The overfitting statistics (DSR, PBO, ...) by what they were computed on."""
        return self.report_data.overfitting

    def seed_spread(self) -> str:
        """Per variant over its seeds: Sharpe and total return as mean ± sd (worst)."""
        from dope.backtest.walkforward import SeedSpread, seed_groups

        groups = seed_groups(list(self.results))
        if not groups:
            return "one seed (a grid search is deterministic)"
        lines = ["spread over seeds (mean ± sd, worst):"]
        for base, names in groups.items():
            sharpe = SeedSpread.of([self.results[n].metrics["sharpe"] for n in names])
            total = SeedSpread.of([self.results[n].metrics["total_return"] for n in names])
            lines.append(f"  {base}: {len(names)} seeds, Sharpe {sharpe.text('.3g')}, "
                         f"total return {total.text('+.2%')}")
        best = self.grid.extra.get("seed_best")
        if best:
            lines.append(f"  whole-span search, best {self.grid.objective} per seed: {SeedSpread.of(best).text('.3g')} "
                         f"({self.grid.n_trials} trials in all, every seed counted in the DSR)")
        return "\n".join(lines)

    def save(self, folder: str | Path) -> Path:
        """Write the results folder ``dope optimize --out`` writes (``dope report`` reads it)."""
        folder = save_report_data(self.report_data, Path(folder))
        self.grid.table.to_parquet(folder / "trials.parquet", index=False)
        for name, r in self.results.items():
            r.folds.to_parquet(folder / f"folds-{name.replace(' ', '_').replace('/', '-')}.parquet", index=False)
        return folder

    def plot(self) -> Any:
        """The report's Bokeh layout (``bokeh.io.show(opt.plot())`` in a notebook)."""
        from dope.backtest.report import build_layout

        return build_layout(self.report_data)

    def write_report(self, path: str | Path) -> Path:
        """The self-contained HTML report (``dope optimize --report``)."""
        return write_report(self.report_data, Path(path))


def optimize(bars: pd.DataFrame, predictions: Mapping[str, PredictionsLike], *,
             uppers: Sequence[float] | str = "0:0.002:5", lowers: Sequence[float] | str = "-0.002:0:5",
             method: Literal["grid", "optuna"] = "grid", trials: int = 50, seed: int = 0, seeds: int = 5,
             objective: str = "sharpe", train: str = "28d", test: str = "14d", anchored: bool = False,
             fee: float = 0.001, slippage_bps: float = 0.0, short: bool = False, runner: Runner | None = None,
             allow_in_sample: bool = False, title: str = "threshold optimization") -> Optimization:
    """``dope optimize``: search thresholds (grid or seeded Optuna) walk-forward for each model and for all
    of them, out of sample only; plus the search over the whole span with its DSR and PBO.

    ``predictions`` maps a model's name to its predictions. ``runner`` runs the searches (default: this
    process; ``dope.backtest.parallel.open_runner`` gives a Dask one).
    """
    from dope.backtest.optimize import market_from_frames

    interval = _checked_bars(bars)
    frames = {name: _predictions(p, allow_in_sample, str(p) if not isinstance(p, pd.DataFrame) else name)
              for name, p in predictions.items()}
    try:
        market = market_from_frames(bars, frames, interval)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    settings = {"dope": __version__, "uppers": _values(uppers), "lowers": _values(lowers), "method": method, "trials": trials,
                "seed": seed, "seeds": seeds, "objective": objective, "train": train, "test": test,
                "anchored": anchored, "fee": fee, "slippage_bps": slippage_bps, "short": short}
    results, grid, dsr = _search(market, settings, runner or SerialRunner(progress=False))
    data = report_data(title, market, results, grid, dsr,
                       notes=f"train {train}, test {test}, {method} search, fee {fee}")
    return Optimization(results, grid, dsr, data, settings)


def _values(values: Sequence[float] | str) -> tuple[float, ...]:
    return parse_values(values) if isinstance(values, str) else tuple(float(v) for v in values)


def _search(market: Any, s: Mapping[str, Any], runner: Runner) -> tuple[dict[str, Any], Any, Any]:
    from dope.backtest.optimize import SearchSpace
    from dope.backtest.walkforward import (
        SearchSpec,
        compare_models,
        deflate_variants,
        search,
        walk_forward_folds,
    )

    if s["seeds"] < 1:
        raise UserError(f"seeds must be at least 1, not {s['seeds']}")
    space = SearchSpace(tuple(market.predictions), s["uppers"], s["lowers"])
    spec = SearchSpec(space, s["method"], s["trials"], s["seed"], s["objective"], seeds=s["seeds"])
    config = _config(0.0, 0.0, s["fee"], s["slippage_bps"], s["short"])
    try:
        folds = walk_forward_folds(market.n, parse_duration(s["train"]) // market.interval_ms,
                                   parse_duration(s["test"]) // market.interval_ms, s["anchored"])
        results = compare_models(market, spec, config, folds, runner)
        grid = search(market, spec, config, (0, market.n), runner)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return results, grid, deflate_variants(results)


def report(results: Optimization | str | Path, output: str | Path = "report.html") -> Path:
    """Write the HTML report of an :class:`Optimization` or of a ``dope optimize --out`` folder."""
    if isinstance(results, Optimization):
        return results.write_report(output)
    return write_report(load_report_data(Path(results)), Path(output))
