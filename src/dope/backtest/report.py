"""The self-contained HTML report of an optimization: Bokeh plots with BokehJS inlined (no network).

A report is made from :class:`ReportData`, which ``dope optimize`` saves as a folder of Parquet files and a
JSON summary (:func:`save_report_data`) and ``dope report`` reads back (:func:`load_report_data`)::

    oos.parquet       open_time, close, one equity column per curve (strategies and buy & hold)
    trades.parquet    side (+1 buy, -1 sell), time, price  (of the first curve)
    comparison.parquet  one row per strategy: metrics, DSR, PBO, ...
    heatmap-<model>.parquet  Sharpe by (lower, upper) thresholds of a grid search
    summary.json      title, notes, overfitting statistics (name -> {stat: value}), the chosen cells
                      of the heatmaps (model -> [upper, lower])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.errors import UserError
from dope.plots.figures import heatmap_long
from dope.types import FloatArray


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows; times are epoch ms."""

    title: str
    open_time: npt.NDArray[np.int64]
    close: FloatArray
    equity: Mapping[str, FloatArray]
    trades: pd.DataFrame
    comparison: pd.DataFrame
    heatmaps: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    overfitting: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: str = ""
    chosen: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Per heatmap, the (upper, lower) cell its search chose (outlined on the heatmap)."""


def build_layout(data: ReportData, max_points: int = 5000) -> Any:
    """The report's Bokeh layout: equity, drawdown, trades, comparison, overfitting, heatmaps.

    Curves longer than ``max_points`` are drawn through every k-th bar (the last bar kept; the drawdown
    is computed before thinning); the trade markers are all drawn.
    """
    from bokeh.layouts import column
    from bokeh.models.widgets import Div

    from dope.plots import (
        drawdown,
        drawdown_figure,
        equity_figure,
        heatmap_figure,
        stats_div,
        table_widget,
        trades_figure,
    )

    keep = thin_index(len(data.open_time), max_points)
    times = data.open_time[keep]
    curves = {name: values[keep] for name, values in data.equity.items()}
    # the drawdown of the full curve, thinned; passed as 1 + drawdown, whose own drawdown it is exactly
    drawdowns = {name: 1.0 + drawdown(values)[keep] for name, values in data.equity.items()}
    eq = equity_figure(times, curves, title="Equity out of sample, against buy and hold")
    parts: list[Any] = [Div(text=f"<h1>{_escape(data.title)}</h1><p>{_escape(data.notes)}</p>"), eq,
                        drawdown_figure(times, drawdowns, x_range=eq.x_range)]
    buys, sells = (data.trades[data.trades["side"] == s] for s in (1, -1))
    parts.append(trades_figure(times, data.close[keep], (buys["time"], buys["price"]),
                               (sells["time"], sells["price"]), title="Trades on the price", x_range=eq.x_range))
    parts += [Div(text="<h2>Model comparison</h2>"), table_widget(data.comparison, "comparison")]
    parts += [stats_div(f"Overfitting: {name}", stats) for name, stats in data.overfitting.items()]
    parts += [heatmap_figure(frame, title=f"Sharpe by thresholds: {name}", chosen=data.chosen.get(name))
              for name, frame in data.heatmaps.items()]
    return column(*parts)


def thin_index(n: int, max_points: int) -> npt.NDArray[np.int64]:
    """Every k-th index of ``n`` so that at most about ``max_points`` remain, the last one always kept."""
    step = max(1, -(-n // max(1, max_points)))
    index = np.arange(0, n, step, dtype=np.int64)
    return index if n == 0 or index[-1] == n - 1 else np.append(index, n - 1)


def render_report(*datas: ReportData, title: str | None = None) -> str:
    """One HTML page with a section per ``ReportData``, BokehJS inlined (it works offline)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.resources import INLINE

    if not datas:
        raise ValueError("nothing to report")
    layout = build_layout(datas[0]) if len(datas) == 1 else column(*[build_layout(d) for d in datas])
    return str(file_html(layout, INLINE, title=title or datas[0].title))


def write_report(data: ReportData, path: Path) -> Path:
    """Render the report into ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path


def save_report_data(data: ReportData, folder: Path) -> Path:
    """Write ``data`` into ``folder`` (the layout in the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    oos = pd.DataFrame({"open_time": data.open_time, "close": data.close, **dict(data.equity)})
    oos.to_parquet(folder / "oos.parquet", index=False)
    data.trades.to_parquet(folder / "trades.parquet", index=False)
    data.comparison.to_parquet(folder / "comparison.parquet", index=False)
    for name, frame in data.heatmaps.items():
        heatmap_long(frame).to_parquet(folder / f"heatmap-{name}.parquet", index=False)
    summary = {"title": data.title, "notes": data.notes, "curves": list(data.equity),
               "chosen": {name: list(cell) for name, cell in data.chosen.items()},
               "overfitting": {k: {s: _json_value(v) for s, v in stats.items()} for k, stats in data.overfitting.items()}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return folder


def load_report_data(folder: Path) -> ReportData:
    """Read what :func:`save_report_data` wrote (a clear error when the folder is not such a result)."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{folder} is not an optimization result folder (no summary.json)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    oos = pd.read_parquet(folder / "oos.parquet")
    heatmaps = {p.stem.removeprefix("heatmap-"): _heatmap_wide(pd.read_parquet(p))
                for p in sorted(folder.glob("heatmap-*.parquet"))}
    return ReportData(title=summary["title"], open_time=oos["open_time"].to_numpy(np.int64),
                      close=oos["close"].to_numpy(np.float64),
                      equity={c: oos[c].to_numpy(np.float64) for c in summary["curves"]},
                      trades=pd.read_parquet(folder / "trades.parquet"),
                      comparison=pd.read_parquet(folder / "comparison.parquet"), heatmaps=heatmaps,
                      overfitting=summary["overfitting"], notes=summary["notes"],
                      chosen={name: (float(u), float(lo)) for name, (u, lo) in summary.get("chosen", {}).items()})


def _heatmap_wide(long: pd.DataFrame) -> pd.DataFrame:
    return long.pivot_table(index="lower", columns="upper", values="value", aggfunc="first")


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def trade_markers(trades: pd.DataFrame) -> pd.DataFrame:
    """Buy/sell markers (side, time, price) of a backtest's trades frame (entries, and exits when closed)."""
    entries = pd.DataFrame({"side": trades["direction"].to_numpy(np.int64),
                            "time": trades["entry_time"].to_numpy(np.int64),
                            "price": trades["entry_price"].to_numpy(np.float64)})
    closed = trades[~trades["is_open"].to_numpy(dtype=bool)]
    exits = pd.DataFrame({"side": -closed["direction"].to_numpy(np.int64),
                          "time": closed["exit_time"].to_numpy(np.int64),
                          "price": closed["exit_price"].to_numpy(np.float64)})
    return pd.concat([entries, exits], ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)


def comparison_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per walk-forward variant (out-of-sample metrics, PSR, trials) and one for buy & hold."""
    from dope.backtest.optimize import metric_values

    rows = [{"strategy": name, **r.metrics, "psr": r.psr.dsr if r.psr else np.nan, "n_trials": r.n_trials,
             "mean_fold_pbo": float(np.nanmean(r.folds["is_pbo"])) if r.folds["is_pbo"].notna().any() else np.nan}
            for name, r in results.items()]
    first = next(iter(results.values()))
    rows.append({"strategy": "buy & hold", **metric_values(first.benchmark.metrics)})
    return pd.DataFrame(rows)


def search_stats(search: Any) -> dict[str, Any]:
    """The overfitting statistics of one search (see :class:`dope.backtest.optimize.SearchResult`)."""
    stats: dict[str, Any] = {"trials": search.n_trials, "best model": search.best.model,
                             "best upper": search.best.upper, "best lower": search.best.lower,
                             f"best {search.objective}": float(search.table[search.objective].max())}
    if search.dsr is not None:
        stats |= {"DSR": search.dsr.dsr, "PSR (benchmark 0)": search.dsr.psr_zero,
                  "expected max Sharpe (per period)": search.dsr.expected_max_sharpe,
                  "best Sharpe (per period)": search.dsr.sharpe, "periods": search.dsr.n}
    if search.pbo is not None:
        stats |= {"PBO": search.pbo.pbo, "P(OOS loss)": search.pbo.prob_oos_loss,
                  "degradation slope": search.pbo.degradation_slope, "CSCV blocks": search.pbo.n_blocks,
                  "CSCV combinations": search.pbo.n_combinations}
    return stats


def report_data(title: str, market: Any, results: Mapping[str, Any], grid: Any | None = None,
                variants_dsr: Any | None = None, notes: str = "") -> ReportData:
    """Report data from walk-forward variants (same folds), an optional full-span grid and the variants' DSR."""
    first = next(iter(results.values()))
    start, end = first.span
    equity = {name: np.asarray(r.result.equity, dtype=np.float64) for name, r in results.items()}
    equity["buy & hold"] = np.asarray(first.benchmark.equity, dtype=np.float64)
    overfitting: dict[str, dict[str, Any]] = {}
    if variants_dsr is not None:
        overfitting["walk-forward variants (out of sample)"] = {
            "variants": variants_dsr.n_trials, "best Sharpe (per period)": variants_dsr.sharpe,
            "DSR": variants_dsr.dsr, "expected max Sharpe (per period)": variants_dsr.expected_max_sharpe}
    heatmaps: dict[str, pd.DataFrame] = {}
    if grid is not None:
        from dope.backtest.optimize import heatmap_frame

        overfitting["in-sample grid over the whole span"] = search_stats(grid)
        heatmaps = {m: heatmap_frame(grid.table, m) for m in dict.fromkeys(grid.table["model"])}
    return ReportData(title, np.asarray(first.open_time, dtype=np.int64),
                      np.asarray(market.close[start:end], dtype=np.float64), equity,
                      trade_markers(first.result.trades), comparison_table(results), heatmaps, overfitting, notes,
                      chosen_cells(grid) if grid is not None else {})


def chosen_cells(search: Any) -> dict[str, tuple[float, float]]:
    """Per model of a search, the (upper, lower) of its best trial by the search's objective."""
    table = search.table.dropna(subset=[search.objective])
    best = table.loc[table.groupby("model", sort=False)[search.objective].idxmax()]
    return {str(r.model): (float(r.upper), float(r.lower)) for r in best.itertuples()}
