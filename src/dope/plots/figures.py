"""Figure builders: equity against a benchmark, drawdown, trades on the price, threshold heatmap, tables.

>>> import numpy as np
>>> fig = equity_figure(np.array([0, 60_000]), {"strategy": np.array([1.0, 1.1])})
>>> fig.title.text
'Equity'
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from bokeh.models import ColumnDataSource, FactorRange
from bokeh.models.widgets import DataTable, Div, TableColumn
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

FloatArray = npt.NDArray[np.float64]
WIDTH = 900


def _time_figure(title: str, height: int = 300, **kwargs: Any) -> Any:
    return figure(title=title, x_axis_type="datetime", width=WIDTH, height=height,
                  tools="pan,xwheel_zoom,box_zoom,reset,save", **kwargs)


def _datetimes(times_ms: npt.ArrayLike) -> npt.NDArray[np.datetime64]:
    return np.asarray(times_ms, dtype=np.int64).astype("datetime64[ms]")


def equity_figure(times_ms: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike], title: str = "Equity",
                  x_range: Any = None) -> Any:
    """One line per named equity curve (e.g. the strategy and buy-and-hold) over the same bars."""
    fig = _time_figure(title, **({"x_range": x_range} if x_range is not None else {}))
    x = _datetimes(times_ms)
    for i, (name, values) in enumerate(curves.items()):
        fig.line(x, np.asarray(values, dtype=np.float64), legend_label=name,
                 color=Category10_10[i % 10], line_width=1.5)
    fig.legend.location = "top_left"
    fig.yaxis.axis_label = "equity"
    return fig


def drawdown(equity: npt.ArrayLike) -> FloatArray:
    """Drawdown from the running peak, as a fraction (0 at a new high, negative below it)."""
    e = np.asarray(equity, dtype=np.float64)
    return np.asarray(e / np.maximum.accumulate(e) - 1.0, dtype=np.float64)


def drawdown_figure(times_ms: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike], title: str = "Drawdown",
                    x_range: Any = None) -> Any:
    """The drawdown of each named equity curve."""
    fig = _time_figure(title, height=220, **({"x_range": x_range} if x_range is not None else {}))
    x = _datetimes(times_ms)
    for i, (name, values) in enumerate(curves.items()):
        fig.line(x, drawdown(values), legend_label=name, color=Category10_10[i % 10])
    fig.legend.location = "bottom_left"
    fig.yaxis.axis_label = "drawdown"
    return fig


def trades_figure(times_ms: npt.ArrayLike, price: npt.ArrayLike, buys: tuple[npt.ArrayLike, npt.ArrayLike],
                  sells: tuple[npt.ArrayLike, npt.ArrayLike], title: str = "Trades", x_range: Any = None) -> Any:
    """The price with buy (green, up) and sell (red, down) markers; ``buys``/``sells`` = (times_ms, prices)."""
    fig = _time_figure(title, **({"x_range": x_range} if x_range is not None else {}))
    fig.line(_datetimes(times_ms), np.asarray(price, dtype=np.float64), color="gray", legend_label="price")
    fig.scatter(_datetimes(buys[0]), np.asarray(buys[1], dtype=np.float64), marker="triangle", size=8,
                color="green", legend_label="buy")
    fig.scatter(_datetimes(sells[0]), np.asarray(sells[1], dtype=np.float64), marker="inverted_triangle",
                size=8, color="red", legend_label="sell")
    fig.legend.location = "top_left"
    return fig


def heatmap_long(frame: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """A (lower x upper) frame as rows of ``lower``, ``upper``, ``value`` (empty cells dropped)."""
    long = pd.DataFrame({"lower": np.repeat(frame.index.to_numpy(np.float64), len(frame.columns)),
                         "upper": np.tile(frame.columns.to_numpy(np.float64), len(frame.index)),
                         value: frame.to_numpy(np.float64).ravel()})
    return long[long[value].notna()].reset_index(drop=True)


def heatmap_figure(frame: pd.DataFrame, title: str = "Sharpe by thresholds", value: str = "sharpe") -> Any:
    """A heatmap of ``frame`` (index: lower threshold, columns: upper threshold, cells: ``value``)."""
    long = heatmap_long(frame, value)
    x = [f"{u:g}" for u in frame.columns]
    y = [f"{lo:g}" for lo in frame.index]
    data: dict[str, Any] = {"upper": [f"{u:g}" for u in long["upper"]], "lower": [f"{lo:g}" for lo in long["lower"]],
                            value: long[value].to_numpy(dtype=np.float64)}
    finite = long[value][np.isfinite(long[value])]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    fig = figure(title=title, x_range=FactorRange(factors=x), y_range=FactorRange(factors=y),
                 width=min(WIDTH, 120 + 60 * len(x)), height=min(600, 120 + 40 * len(y)), tools="hover,save",
                 tooltips=[("upper", "@upper"), ("lower", "@lower"), (value, f"@{value}{{0.000}}")])
    fig.rect("upper", "lower", 1, 1, source=ColumnDataSource(data), line_color=None,
             fill_color=linear_cmap(value, Viridis256, low, high if high > low else low + 1e-12))
    fig.xaxis.axis_label = "upper threshold"
    fig.yaxis.axis_label = "lower threshold"
    return fig


def table_widget(frame: pd.DataFrame, title: str = "", height: int = 280) -> Any:
    """A Bokeh DataTable of ``frame`` (floats shown with 4 significant digits)."""
    data: dict[str, Any] = {str(c): [_cell(v) for v in frame[c]] for c in frame.columns}
    columns = [TableColumn(field=str(c), title=str(c)) for c in frame.columns]
    return DataTable(source=ColumnDataSource(data), columns=columns, width=WIDTH, height=height,
                     index_position=None, name=title or None)


def _cell(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value) if not isinstance(value, int | np.integer) else int(value)


def stats_div(title: str, stats: Mapping[str, Any]) -> Any:
    """A small HTML table of named statistics under a heading."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(_cell(v)))}</td></tr>"
                   for k, v in stats.items())
    return Div(text=f"<h3>{html.escape(title)}</h3><table>{rows}</table>", width=WIDTH)
