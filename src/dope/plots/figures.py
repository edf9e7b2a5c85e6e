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
from bokeh.models import ColorBar, ColumnDataSource, FactorRange, Title
from bokeh.models.widgets import DataTable, Div, TableColumn
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from dope.types import FloatArray

WIDTH = 900


def time_figure(title: str, height: int = 300, x_range: Any = None, name: str | None = None) -> Any:
    """An empty figure with a datetime x axis (times in epoch ms), sharing ``x_range`` if given."""
    extra: dict[str, Any] = {"x_range": x_range} if x_range is not None else {}
    if name is not None:
        extra["name"] = name
    return figure(title=title, x_axis_type="datetime", width=WIDTH, height=height,
                  tools="pan,xwheel_zoom,box_zoom,reset,save", **extra)


def curves_figure(source: ColumnDataSource, lines: Mapping[str, str], title: str, *, height: int = 300,
                  x_range: Any = None, y_label: str = "", legend: str = "top_left", name: str | None = None) -> Any:
    """One line per ``label -> column`` of ``source`` (x = its ``time`` column, epoch ms).

    The live dashboard streams into ``source``; the static report fills it once: the same figure.
    """
    fig = time_figure(title, height, x_range, name)
    for i, (label, column) in enumerate(lines.items()):
        fig.line("time", column, source=source, legend_label=label, color=Category10_10[i % 10], line_width=1.5)
    fig.legend.location = legend
    fig.yaxis.axis_label = y_label
    return fig


def add_trade_markers(fig: Any, buys: ColumnDataSource, sells: ColumnDataSource) -> None:
    """Buy (green, up) and sell (red, down) markers from sources with ``time`` and ``price`` columns."""
    fig.scatter("time", "price", source=buys, marker="triangle", size=10, color="#2ca02c", legend_label="buy",
                name="buy_markers")
    fig.scatter("time", "price", source=sells, marker="inverted_triangle", size=10, color="#d62728",
                legend_label="sell", name="sell_markers")


def _curves_source(times_ms: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike]) -> tuple[Any, dict[str, str]]:
    columns = {f"y{i}": np.asarray(values, dtype=np.float64) for i, values in enumerate(curves.values())}
    source = ColumnDataSource({"time": np.asarray(times_ms, dtype=np.int64), **columns})
    return source, {label: f"y{i}" for i, label in enumerate(curves)}


def equity_figure(times_ms: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike], title: str = "Equity",
                  x_range: Any = None) -> Any:
    """One line per named equity curve (e.g. the strategy and buy-and-hold) over the same bars."""
    source, lines = _curves_source(times_ms, curves)
    return curves_figure(source, lines, title, x_range=x_range, y_label="equity")


def drawdown(equity: npt.ArrayLike) -> FloatArray:
    """Drawdown from the running peak, as a fraction (0 at a new high, negative below it)."""
    e = np.asarray(equity, dtype=np.float64)
    return np.asarray(e / np.maximum.accumulate(e) - 1.0, dtype=np.float64)


def drawdown_figure(times_ms: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike], title: str = "Drawdown",
                    x_range: Any = None) -> Any:
    """The drawdown of each named equity curve."""
    source, lines = _curves_source(times_ms, {name: drawdown(values) for name, values in curves.items()})
    return curves_figure(source, lines, title, height=220, x_range=x_range, y_label="drawdown",
                         legend="bottom_left")


def trades_figure(times_ms: npt.ArrayLike, price: npt.ArrayLike, buys: tuple[npt.ArrayLike, npt.ArrayLike],
                  sells: tuple[npt.ArrayLike, npt.ArrayLike], title: str = "Trades", x_range: Any = None) -> Any:
    """The price with buy and sell markers; ``buys``/``sells`` = (times_ms, prices)."""
    source, lines = _curves_source(times_ms, {"price": price})
    fig = curves_figure(source, lines, title, x_range=x_range)
    add_trade_markers(fig, *(ColumnDataSource({"time": np.asarray(t, dtype=np.int64),
                                               "price": np.asarray(p, dtype=np.float64)}) for t, p in (buys, sells)))
    return fig


def heatmap_long(frame: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """A (lower x upper) frame as rows of ``lower``, ``upper``, ``value`` (empty cells dropped)."""
    long = pd.DataFrame({"lower": np.repeat(frame.index.to_numpy(np.float64), len(frame.columns)),
                         "upper": np.tile(frame.columns.to_numpy(np.float64), len(frame.index)),
                         value: frame.to_numpy(np.float64).ravel()})
    return long[long[value].notna()].reset_index(drop=True)


def heatmap_figure(frame: pd.DataFrame, title: str = "Sharpe by thresholds", value: str = "sharpe",
                   chosen: tuple[float, float] | None = None) -> Any:
    """A heatmap of ``frame`` (index: lower threshold, columns: upper threshold, cells: ``value``).

    A colour bar gives the scale; ``chosen`` = (upper, lower) outlines that cell (the search's pick).
    """
    long = heatmap_long(frame, value)
    x = [f"{u:g}" for u in frame.columns]
    y = [f"{lo:g}" for lo in frame.index]
    data: dict[str, Any] = {"upper": [f"{u:g}" for u in long["upper"]], "lower": [f"{lo:g}" for lo in long["lower"]],
                            value: long[value].to_numpy(dtype=np.float64)}
    finite = long[value][np.isfinite(long[value])]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    fig = figure(title=title, x_range=FactorRange(factors=x), y_range=FactorRange(factors=y),
                 width=min(WIDTH, max(420, 200 + 60 * len(x))), height=min(640, 150 + 40 * len(y)), tools="hover,save",
                 tooltips=[("upper", "@upper"), ("lower", "@lower"), (value, f"@{value}{{0.000}}")])
    colours = linear_cmap(value, Viridis256, low, high if high > low else low + 1e-12)
    fig.rect("upper", "lower", 1, 1, source=ColumnDataSource(data), line_color=None, fill_color=colours)
    fig.add_layout(ColorBar(color_mapper=colours.transform, title=value, width=12), "right")
    if chosen is not None:
        _mark_cell(fig, f"{chosen[0]:g}", f"{chosen[1]:g}")
    fig.xaxis.axis_label = "upper threshold"
    fig.yaxis.axis_label = "lower threshold"
    return fig


def _mark_cell(fig: Any, upper: str, lower: str) -> None:
    """Outline the cell (upper, lower) of a heatmap, and say so under the plot."""
    fig.rect([upper], [lower], 0.92, 0.92, fill_color=None, line_color="#d62728", line_width=3,
             name="chosen_cell")
    fig.add_layout(Title(text=f"outlined: the chosen upper {upper}, lower {lower}", text_font_style="normal",
                         text_color="#d62728"), "below")


def table_widget(frame: pd.DataFrame, title: str = "", row_height: int = 25) -> Any:
    """A Bokeh DataTable of ``frame`` (floats shown with 4 significant digits), sized to its content.

    Each column is as wide as its title or its longest cell, and the table exactly as tall as its rows:
    no column is cut and no empty band is left under the last row.
    """
    data: dict[str, Any] = {str(c): [_cell(v) for v in frame[c]] for c in frame.columns}
    widths = {name: _text_width([name, *map(str, cells)]) for name, cells in data.items()}
    columns = [TableColumn(field=name, title=name, width=width) for name, width in widths.items()]
    return DataTable(source=ColumnDataSource(data), columns=columns, width=sum(widths.values()) + 2,
                     height=(len(frame) + 1) * row_height + 2, row_height=row_height, autosize_mode="none",
                     index_position=None, name=title or None)


CHAR_PX = 8
"""A generous width of one character of the table's 13 px sans-serif font, in pixels."""


def _text_width(texts: list[str]) -> int:
    """Pixels a column needs for its longest text, with the cell padding."""
    return CHAR_PX * max(map(len, texts)) + 16


def _cell(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value) if not isinstance(value, int | np.integer) else int(value)


def stats_div(title: str, stats: Mapping[str, Any]) -> Any:
    """A small HTML table of named statistics under a heading."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(_cell(v)))}</td></tr>"
                   for k, v in stats.items())
    return Div(text=f"<h3>{html.escape(title)}</h3><table>{rows}</table>", width=WIDTH)
