"""Bokeh figure builders shared by the HTML report and the live dashboard: data in, figure out.

Every builder is pure (no I/O, no global state); times are epoch milliseconds (UTC).
"""

from dope.plots.figures import (
    drawdown,
    drawdown_figure,
    equity_figure,
    heatmap_figure,
    heatmap_long,
    stats_div,
    table_widget,
    trades_figure,
)

__all__ = ["drawdown", "drawdown_figure", "equity_figure", "heatmap_figure", "heatmap_long", "stats_div", "table_widget",
           "trades_figure"]
