"""Bokeh figure builders shared by the HTML report and the live dashboard: data in, figure out.

Every builder is pure (no I/O, no global state); times are epoch milliseconds (UTC). The
source-based builders (``curves_figure``, ``add_trade_markers``, ``time_figure``) are what the
live dashboard streams into; the array-based ones wrap them for the static report.
"""

from dope.plots.figures import (
    add_trade_markers,
    curves_figure,
    drawdown,
    drawdown_figure,
    equity_figure,
    heatmap_figure,
    heatmap_long,
    stats_div,
    table_widget,
    time_figure,
    trades_figure,
)

__all__ = ["add_trade_markers", "curves_figure", "drawdown", "drawdown_figure", "equity_figure", "heatmap_figure",
           "heatmap_long", "stats_div", "table_widget", "time_figure", "trades_figure"]
