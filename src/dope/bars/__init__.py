"""Trade -> bar aggregation: one incremental path (live) and one vectorized path (bulk), same bars."""

from dope.bars.incremental import BarBuilder
from dope.bars.interval import align, format_interval, parse_interval
from dope.bars.resample import resample_bars
from dope.bars.schema import BAR_COLUMNS, bars_from_frame, bars_to_frame
from dope.bars.vectorized import TradeArrays, build_bars

__all__ = [
    "BAR_COLUMNS",
    "BarBuilder",
    "TradeArrays",
    "align",
    "bars_from_frame",
    "bars_to_frame",
    "build_bars",
    "format_interval",
    "parse_interval",
    "resample_bars",
]
