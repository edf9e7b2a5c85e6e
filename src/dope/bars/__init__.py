"""Trade -> bar aggregation: one incremental path (live) and one vectorized path (bulk), same bars.

The names below load on first use (:mod:`dope.lazy`): the config of every service reads
``dope.bars.interval`` alone, and must not pay for pandas and numba at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dope.lazy import lazy_exports

if TYPE_CHECKING:
    from dope.bars.incremental import BarBuilder
    from dope.bars.interval import align, format_interval, parse_interval
    from dope.bars.resample import resample_bars
    from dope.bars.schema import BAR_COLUMNS, bars_from_frame, bars_to_frame
    from dope.bars.vectorized import TradeArrays, build_bars

_HOME = {"BarBuilder": "incremental", "align": "interval", "format_interval": "interval",
         "parse_interval": "interval", "resample_bars": "resample", "BAR_COLUMNS": "schema",
         "bars_from_frame": "schema", "bars_to_frame": "schema", "TradeArrays": "vectorized",
         "build_bars": "vectorized"}

__all__ = ["align", "BAR_COLUMNS", "BarBuilder", "bars_from_frame", "bars_to_frame", "build_bars",
           "format_interval", "parse_interval", "resample_bars", "TradeArrays"]
__getattr__ = lazy_exports(__name__, _HOME)
