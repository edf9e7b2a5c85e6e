"""``dope study``: the walk-forward threshold study on the real 15-minute klines -> docs/study/.

    dope study                                        # 3 symbols, 2025, RF, LSTM (5 seeds) and baselines (~5 min)
    dope study --symbols BTCUSDT --models momentum zero --out /tmp/study
    dope study --seeds 5                              # each stochastic model fitted with seeds 0..4

Seeds are trials: a model kind whose parameters take a ``seed`` (random forest, LSTM, LightGBM) is
fitted once per seed, and each seed is a variant of its own (``random_forest/s0`` ...): it is traded,
counted in the DSR's number of variants and trials, and the README reports the spread over seeds
(mean, sd, worst) beside the headline figures. Per symbol: the models' out-of-sample forecasts come from :func:`dope.research.walk_forward` (purged
folds, the settings of ``dope evaluate``); on those forecasts, a threshold grid is optimized walk-forward
(each model alone and all together) and only the stitched out-of-sample trading is reported, beside
buy and hold, with the PSR, the DSR across the variants, and the DSR and PBO of an in-sample grid over the
whole span. Writes ``README.md`` (tables and a reading generated from the numbers) and ``report.html``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dope.errors import UserError

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MODELS = ("random_forest", "lstm", "momentum", "zero")
UPPERS = (0.0, 0.0002, 0.0005, 0.001, 0.002)
LOWERS = (-0.002, -0.001, -0.0005, -0.0002, 0.0)
DAY_BARS = 96


@dataclass(frozen=True)
class StudySettings:
    """What one study run does (the defaults are the documented run)."""

    data: Path
    symbols: tuple[str, ...] = SYMBOLS
    models: tuple[str, ...] = MODELS
    model_folds: int = 4
    train_days: int = 28
    test_days: int = 14
    fee_rate: float = 0.001
    workers: int = 2
    seeds: int = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope study``."""
    parser.add_argument("--data", default="../shared/data/binance/klines/15m",
                        help="folder of the 15m klines files (default ../shared/data/binance/klines/15m)")
    parser.add_argument("--out", default="docs/study", help="folder for README.md and report.html")
    parser.add_argument("--symbols", nargs="*", help=f"symbols (default: {' '.join(SYMBOLS)})")
    parser.add_argument("--models", nargs="*", help=f"model kinds (default: {' '.join(MODELS)})")
    parser.add_argument("--model-folds", type=int, default=4, help="walk-forward folds of the models (4)")
    parser.add_argument("--train-days", type=int, default=28, help="threshold training window, days (28)")
    parser.add_argument("--test-days", type=int, default=14, help="threshold test window, days (14)")
    parser.add_argument("--fee-rate", type=float, default=0.001, help="fee per side (0.001)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="seeds 0..N-1 of each stochastic model, every one a trial (default 5)")
    parser.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers (2)")
    parser.add_argument("--serial", action="store_true", help="no Dask: run in this process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the study and write the README and the report."""
    from dope.training.threads import limit_threads

    limit_threads(2)
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"klines folder not found: {data} (expected ../shared/data/binance/klines/15m)")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, not {args.seeds}")
    settings = StudySettings(data, tuple(args.symbols or SYMBOLS), tuple(args.models or MODELS),
                             args.model_folds, args.train_days, args.test_days, args.fee_rate, args.workers,
                             args.seeds)
    from dope.backtest.parallel import open_runner

    began = time.perf_counter()
    with open_runner(args.scheduler, args.workers, args.serial, not args.no_progress) as runner:
        studies = [study_symbol(settings, s, runner, not args.no_progress) for s in settings.symbols]
    write_outputs(Path(args.out), settings, studies, time.perf_counter() - began)
    print(f"wrote {args.out}/README.md and {args.out}/report.html")
    return 0


@dataclass
class SymbolStudy:
    """One symbol's forecasts, walk-forward variants, in-sample grid and timings."""

    symbol: str
    market: Any
    results: dict[str, Any]
    grid: Any
    variants_dsr: Any
    seconds: dict[str, float]


def forecasts(settings: StudySettings, symbol: str, progress: bool) -> tuple[pd.DataFrame, dict[str, pd.DataFrame],
                                                                              int, dict[str, float]]:
    """The 2025 bars and each variant's out-of-sample forecasts (:func:`dope.research.walk_forward`).

    A seeded kind gives one variant per seed (see :func:`variant_names`); the others one.
    """
    from dope.research import bars_interval, read_files, walk_forward
    from dope.training.evaluation import MODELS as PARAMS
    from dope.training.evaluation import YEAR_END_MS, YEAR_START_MS, kline_file

    bars = read_files([kline_file(settings.data, symbol)], symbol=symbol)
    bars = bars[(bars["open_time"] >= YEAR_START_MS) & (bars["open_time"] < YEAR_END_MS)].reset_index(drop=True)
    out, seconds = {}, {}
    for kind in settings.models:
        began = time.perf_counter()
        for seed, name in variant_names(kind, settings.seeds).items():
            params = {**PARAMS.get(kind, {}), **({} if seed is None else {"seed": seed})}
            out[name] = walk_forward(bars, kind, params=params, folds=settings.model_folds, name=name,
                                     progress=progress).predictions
        seconds[kind] = time.perf_counter() - began
    return bars, out, bars_interval(bars), seconds


def is_seeded(kind: str) -> bool:
    """Whether fitting ``kind`` depends on a random seed (its parameters have a ``seed``)."""
    from dataclasses import fields

    from dope.models.base import model_class

    return any(f.name == "seed" for f in fields(model_class(kind).params_type))


def variant_names(kind: str, seeds: int) -> dict[int | None, str]:
    """Seed -> variant name: ``{None: kind}`` for a deterministic kind, else ``{s: "kind/s<s>"}``."""
    return {s: f"{kind}/s{s}" for s in range(seeds)} if is_seeded(kind) else {None: kind}


def study_symbol(settings: StudySettings, symbol: str, runner: Any, progress: bool) -> SymbolStudy:
    """Forecasts, then the walk-forward threshold optimization and the in-sample grid of one symbol."""
    from dope.backtest.config import BacktestConfig
    from dope.backtest.optimize import SearchSpace, grid_search, market_from_frames
    from dope.backtest.walkforward import SearchSpec, compare_models, deflate_variants, walk_forward_folds

    bars, preds, interval_ms, seconds = forecasts(settings, symbol, progress)
    market = market_from_frames(bars, preds, interval_ms)
    began = time.perf_counter()
    space = SearchSpace(tuple(preds), UPPERS, LOWERS)
    config = BacktestConfig(upper=0.0, lower=0.0, fee_rate=settings.fee_rate)
    folds = walk_forward_folds(market.n, settings.train_days * DAY_BARS, settings.test_days * DAY_BARS)
    results = compare_models(market, SearchSpec(space), config, folds, runner)
    grid = grid_search(market, space, config, runner=runner)
    seconds["thresholds"] = time.perf_counter() - began
    print(f"{symbol}: {market.n} bars, {sum(seconds.values()):.0f} s", flush=True)
    return SymbolStudy(symbol, market, results, grid, deflate_variants(results), seconds)


def write_outputs(out: Path, settings: StudySettings, studies: list[SymbolStudy], seconds: float) -> None:
    """``README.md`` and ``report.html`` in ``out``."""
    from dope.backtest.report import render_report, report_data

    out.mkdir(parents=True, exist_ok=True)
    datas = [report_data(f"{s.symbol}: walk-forward threshold study (15m, 2025)", s.market, s.results, s.grid,
                         s.variants_dsr, notes=_notes(settings)) for s in studies]
    (out / "report.html").write_text(render_report(*datas), encoding="utf-8")
    (out / "README.md").write_text(render_markdown(settings, studies, seconds), encoding="utf-8")


def _notes(settings: StudySettings) -> str:
    return (f"Model forecasts: {settings.model_folds} purged walk-forward folds. Thresholds: optimized on "
            f"{settings.train_days} days, traded on the next {settings.test_days}, rolled; fee "
            f"{settings.fee_rate:.2%} per side. Only the out-of-sample stitch is shown.")


def render_markdown(settings: StudySettings, studies: list[SymbolStudy], seconds: float) -> str:
    """The study's markdown: settings, one table per symbol and a reading generated from the numbers."""
    parts = [_HEAD, _settings_md(settings, studies, seconds)]
    for s in studies:
        parts += [f"## {s.symbol}\n", _comparison_md(s), _seed_spread_md(s), _overfitting_md(s)]
    parts.append(_reading(studies))
    return "\n".join(parts)


_HEAD = """# Walk-forward threshold study: 15-minute klines, 2025

Generated by `dope study` (rerun it to refresh every number here; `docs/study/report.html` holds the plots:
equity against buy and hold, drawdown, trades on the price, threshold heatmaps, the comparison table and
the overfitting statistics). Nothing below is in-sample unless it says so.

How it is made: each model's forecasts are out of sample (`dope.training.walk_forward_forecast`, purged folds:
the first fold's training block is never traded). On those forecasts the thresholds (upper: go long when
the forecast log return is above it; lower: go flat when below) are chosen on a rolling training window
and traded on the next window; the windows' trading is stitched into one continuous backtest (fills at
the next bar's open, fees per side). "all models" lets each window also pick the model. The PSR is the
probability that the true Sharpe ratio of a stitched result is above 0 (daily returns); the DSR deflates
the best variant's Sharpe by the number of variants compared; the in-sample grid over the whole span
gives the DSR with all its trials and the PBO by CSCV (the chance that the in-sample best is below the
median out of sample).

Seeds are trials: a stochastic model (random forest, LSTM) is fitted once per seed and each seed's
forecasts are a variant of their own (`random_forest/s0`, ...), traded, counted in the variants' DSR and
in the in-sample grid's trials; "all models" may pick any seed. Under each table, the spread over seeds
(mean ± sd, worst) of the headline figures; the reading says when a result holds for some seeds only.
"""


def _settings_md(settings: StudySettings, studies: list[SymbolStudy], seconds: float) -> str:
    timing = "; ".join(f"{s.symbol} " + ", ".join(f"{k} {v:.0f} s" for k, v in s.seconds.items()) for s in studies)
    return (f"## Settings\n\n- symbols: {', '.join(settings.symbols)}; models: {', '.join(settings.models)} "
            f"(parameters of `dope evaluate`), {settings.model_folds} model folds, horizon 1 bar; seeds "
            f"0..{settings.seeds - 1} of each stochastic model, each seed a variant and a trial\n"
            f"- thresholds: uppers {list(UPPERS)} x lowers {list(LOWERS)} ({len(UPPERS) * len(LOWERS)} pairs a "
            f"model), grid search, objective: Sharpe; windows {settings.train_days} d train / "
            f"{settings.test_days} d test\n- costs: fee {settings.fee_rate:.2%} per side, no slippage, "
            f"long/flat, all-in sizing\n- run: {seconds:.0f} s on {platform.machine()} "
            f"(Dask local cluster, {settings.workers} workers); {timing}\n")


def _comparison_md(s: SymbolStudy) -> str:
    from dope.backtest.report import comparison_table

    table = comparison_table(s.results)
    first = next(iter(s.results.values()))
    span = pd.to_datetime(first.open_time[[0, -1]], unit="ms", utc=True).strftime("%Y-%m-%d")
    lines = [f"Out of sample {span[0]} to {span[1]} ({len(first.folds)} threshold windows)\n",
             "| strategy | Sharpe | total return | max DD | trades | exposure | fees | PSR | trials |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table.to_dict("records"):
        lines.append(f"| {row['strategy']} | {_f(row['sharpe'], '.2f')} | {_f(row['total_return'], '+.1%')} | "
                     f"{_f(row['max_drawdown'], '.1%')} | {_f(row['n_trades'], '.0f')} | "
                     f"{_f(row['exposure'], '.0%')} | {_f(row['fees_paid'], ',.0f')} | "
                     f"{_f(row.get('psr', math.nan), '.2f')} | {_f(row.get('n_trials', math.nan), '.0f')} |")
    return "\n".join(lines) + "\n"


def _seed_spread_md(s: SymbolStudy) -> str:
    from dope.backtest.walkforward import SeedSpread, seed_groups

    groups = seed_groups(list(s.results))
    if not groups:
        return ""
    lines = ["Spread over seeds (each seed is a variant above; mean ± sd, worst):\n",
             "| model | seeds | Sharpe | total return | PSR | beat buy & hold |", "|---|---:|---|---|---|---:|"]
    for kind, names in groups.items():
        rs = [s.results[n] for n in names]
        beat = sum(r.metrics["total_return"] > r.benchmark.metrics["total_return"] for r in rs)
        psr = [r.psr.dsr if r.psr is not None else math.nan for r in rs]
        lines.append(f"| {kind} | {len(rs)} | {SeedSpread.of([r.metrics['sharpe'] for r in rs]).text('.2f')} | "
                     f"{SeedSpread.of([r.metrics['total_return'] for r in rs]).text('+.1%')} | "
                     f"{SeedSpread.of(psr).text('.2f')} | {beat} of {len(rs)} |")
    return "\n".join(lines) + "\n"


def _overfitting_md(s: SymbolStudy) -> str:
    g, d = s.grid, s.variants_dsr
    best = f"{g.best.model} ({g.best.upper:g}, {g.best.lower:g})"
    lines = [f"- in-sample grid over the whole span: {g.n_trials} trials, best {best} with Sharpe "
             f"{g.table['sharpe'].max():.2f}; DSR {_f(g.dsr.dsr if g.dsr else math.nan, '.3f')}, "
             f"PBO {_f(g.pbo.pbo if g.pbo else math.nan, '.2f')}, P(out-of-sample loss) "
             f"{_f(g.pbo.prob_oos_loss if g.pbo else math.nan, '.2f')}"]
    if g.dsr is not None:
        lines.append(f"- its DSR inputs (daily): best Sharpe {g.dsr.sharpe:.3f}, variance of the trials' Sharpe "
                     f"ratios {g.dsr.var_trials:.3g} -> expected maximum under no skill {g.dsr.expected_max_sharpe:.3f}; "
                     f"skew {g.dsr.skew:.2f}, kurtosis {g.dsr.kurtosis:.1f}, {g.dsr.n} days")
    if d is not None:
        lines.append(f"- walk-forward variants: the best of {d.n_trials} has DSR {d.dsr:.3f}")
    return "\n".join(lines) + "\n"


def _reading(studies: list[SymbolStudy]) -> str:
    lines = ["## Reading (generated from the numbers above)\n"]
    for s in studies:
        table = s.results
        best_name = max(table, key=lambda k: _nan_low(table[k].metrics["sharpe"]))
        best = table[best_name]
        bh = best.benchmark.metrics
        beat = best.metrics["total_return"] > bh["total_return"]
        dsr = s.variants_dsr.dsr if s.variants_dsr else math.nan
        lines.append(f"- {s.symbol}: the best out-of-sample variant is {best_name} (Sharpe "
                     f"{_f(best.metrics['sharpe'], '.2f')}, {_f(best.metrics['total_return'], '+.1%')}); buy and "
                     f"hold made {_f(bh['total_return'], '+.1%')}, so it {'beat' if beat else 'did not beat'} "
                     f"buy and hold.{_seed_caveat(s, best_name)} Deflated by the {s.variants_dsr.n_trials if s.variants_dsr else '?'} "
                     f"variants compared (every seed counted), DSR {_f(dsr, '.2f')}: "
                     f"{'significant at 95%' if dsr >= 0.95 else 'not significant at 95%'}. The in-sample "
                     f"grid's PBO is {_f(s.grid.pbo.pbo if s.grid.pbo else math.nan, '.2f')}.")
    lines += [line for s in studies for line in _seed_disagreements(s)]
    lines.append("\nThe in-sample grids' DSR is near 0 when a few threshold pairs trade on nearly every bar and lose "
                 "the fees: their Sharpe ratios sit far below the rest, the variance of the trials' Sharpe ratios "
                 "grows, and with it the expected maximum that the best trial must beat. That is the statistic "
                 "working as defined (its benchmark assumes normally spread trial Sharpe ratios), not a verdict "
                 "on the walk-forward results, which the PSR and the variants' DSR judge.")
    lines.append("\nA DSR below 0.95 means the result is within what the search alone would produce by luck; "
                 "a PBO near or above 0.5 means the in-sample choice of thresholds carries no information "
                 "about out-of-sample rank. Fees of 0.1% per side make a round trip cost 0.2%, several times "
                 "the typical 15-minute forecast, which is why most thresholds that trade often lose.\n")
    return "\n".join(lines)


def _seed_caveat(s: SymbolStudy, name: str) -> str:
    """What the other seeds of ``name``'s kind did, when ``name`` is one seed of several."""
    from dope.backtest.walkforward import SeedSpread, seed_groups

    kind = name.rpartition("/s")[0]
    names = seed_groups(list(s.results)).get(kind, [])
    if len(names) < 2:
        return ""
    rs = [s.results[n] for n in names]
    beat = sum(r.metrics["total_return"] > r.benchmark.metrics["total_return"] for r in rs)
    sharpe = SeedSpread.of([r.metrics["sharpe"] for r in rs])
    held = "holds for every seed" if beat == len(rs) else f"holds for {beat} of {len(rs)} seeds only"
    return (f" That is one seed of {kind}: over its {len(rs)} seeds the Sharpe is {sharpe.text('.2f')}, and "
            f"beating buy and hold {held}.")


def _seed_disagreements(s: SymbolStudy) -> list[str]:
    """A line per seeded kind whose seeds disagree on beating buy and hold: which seeds did, the Sharpe range."""
    from dope.backtest.walkforward import seed_groups

    lines = []
    for kind, names in seed_groups(list(s.results)).items():
        rs = {n.rpartition("/")[2]: s.results[n] for n in names}
        beat = [seed for seed, r in rs.items() if r.metrics["total_return"] > r.benchmark.metrics["total_return"]]
        if 0 < len(beat) < len(rs):
            sharpes = [r.metrics["sharpe"] for r in rs.values()]
            lines.append(f"- {s.symbol} {kind}: beats buy and hold with seed{'s' if len(beat) > 1 else ''} "
                         f"{', '.join(beat)} only ({len(beat)} of {len(rs)}); its out-of-sample Sharpe ranges "
                         f"{_f(min(sharpes), '.2f')} .. {_f(max(sharpes), '.2f')} across seeds. A one-seed "
                         "run shows one of these draws, not the model.")
    return lines


def _nan_low(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _f(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if not math.isfinite(number) else format(number, spec)
