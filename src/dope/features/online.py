"""The online path: one bar at a time, constant memory per symbol (the live featurizer's core).

>>> from dope.market.synthetic import generate_bars
>>> from dope.bars import bars_from_frame
>>> fs = default_feature_set(10_000)
>>> bars = bars_from_frame(generate_bars(["BTCUSDT"], 0, 10_000 * 130)["BTCUSDT"], 10_000)
>>> featurizer = OnlineFeaturizer(fs, "BTCUSDT")
>>> vectors = [v for v in map(featurizer.update, bars) if v is not None]
>>> len(vectors) == len(bars) - fs.warmup + 1, featurizer.counts["warmup"] == fs.warmup - 1
(True, True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from dope.features import definitions as d
from dope.features.featureset import FeatureSet, default_feature_set
from dope.features.offline import new_state
from dope.features.plugins import fill_plugin_features
from dope.logs import ProblemCounter
from dope.messages import Bar, Features

__all__ = ["OnlineFeaturizer", "default_feature_set", "load_compiled_step"]

log = logging.getLogger(__name__)


class OnlineFeaturizer:
    """Feature vectors of one symbol's bars, one bar at a time; ``None`` until warm.

    Bad bars are never raised on, never silently lost: each one is counted in ``counts``
    (``rejected_symbol``, ``rejected_interval``, ``rejected_order`` for an open time not after
    the last accepted one, ``rejected_value`` for NaN/inf, a non-positive price or a negative
    size) and logged, and the state stays as it was; a context bar with such a close is counted in
    ``rejected_context`` and treated as missing. ``gaps`` counts open-time jumps (warm-up
    restarts), ``context_missing`` bars whose context bar was missing (last close carried).
    """

    def __init__(self, fs: FeatureSet, symbol: str, problems: ProblemCounter | None = None) -> None:
        self.fs = fs
        self.symbol = symbol
        self.problems = problems or ProblemCounter(log)
        self._ring, self._state = new_state(fs)
        self._spec = fs.spec
        self._x = np.zeros(d.IN_CONTEXT + len(fs.context_symbols))
        self._out = np.zeros(len(fs.names))
        self._interval = fs.params.interval_ms
        self._last_open = -(2**62)
        self.counts: dict[str, int] = dict.fromkeys(
            ("bars", "emitted", "warmup", "gaps", "context_missing", "rejected_symbol",
             "rejected_interval", "rejected_order", "rejected_value", "rejected_context"), 0)

    def update(self, bar: Bar, context_bars: Mapping[str, Bar] | None = None) -> Features | None:
        """Feed one bar (and the context symbols' bars of the same open time); the vector once warm."""
        if bar.symbol != self.symbol or bar.interval_ms != self._interval or bar.open_time <= self._last_open:
            self._reject_header(bar)
            return None
        x = self._x
        x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8] = (
            bar.open_time, bar.high, bar.low, bar.close, bar.volume, bar.quote_volume, bar.count,
            bar.taker_buy_volume, bar.empty)
        if self.fs.context_symbols:
            self._fill_context(bar.open_time, context_bars or {})
        flags = d.step(self._ring, self._state, self._spec, x, self._out)
        if self.fs.plugins and flags != d.REJECTED and flags & d.READY:
            fill_plugin_features(self.fs.plugins, self._ring, self._state, self.fs.warmup, self._out,
                                 self.fs.n_builtin)
        return self._outcome(bar, flags)

    def _fill_context(self, open_time: int, context_bars: Mapping[str, Bar]) -> None:
        """Each context close of this open time, NaN (missing: last close carried) otherwise."""
        for j, symbol in enumerate(self.fs.context_symbols):
            other = context_bars.get(symbol)
            close = other.close if other is not None and other.open_time == open_time else math.nan
            if not (math.isnan(close) or (math.isfinite(close) and close > 0.0)):
                self._reject("rejected_context", f"context {symbol} bar {open_time}: close {close}")
                close = math.nan
            self._x[d.IN_CONTEXT + j] = close

    def _outcome(self, bar: Bar, flags: int) -> Features | None:
        if flags == d.REJECTED:
            self._reject("rejected_value", f"{bar.symbol} bar {bar.open_time}: NaN/inf, non-positive "
                         f"price or negative size in {self._x.tolist()}")
            return None
        counts = self.counts
        counts["bars"] += 1
        self._last_open = bar.open_time
        if flags & d.GAP:
            counts["gaps"] += 1
        if flags & d.CONTEXT_MISSING:
            counts["context_missing"] += 1
        if not flags & d.READY:
            counts["warmup"] += 1
            return None
        counts["emitted"] += 1
        return Features(symbol=bar.symbol, event_time=bar.close_time, open_time=bar.open_time,
                        feature_set=self.fs.name, feature_version=self.fs.version, values=self._out.tolist())

    def _reject_header(self, bar: Bar) -> None:
        if bar.symbol != self.symbol:
            self._reject("rejected_symbol", f"bar of {bar.symbol} sent to the {self.symbol} featurizer")
        elif bar.interval_ms != self._interval:
            self._reject("rejected_interval", f"{bar.symbol} bar of {bar.interval_ms} ms, "
                         f"feature set {self.fs.name} is for {self._interval} ms")
        else:
            self._reject("rejected_order", f"{bar.symbol} bar {bar.open_time} not after the last "
                         f"accepted one ({self._last_open})")

    def _reject(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.problems.report(f"features_{kind}", message)

    @property
    def ready(self) -> bool:
        """True once the windows are full (the next accepted bar without a gap yields a vector)."""
        return bool(d.is_ready(self._state, self.fs.warmup))


def load_compiled_step(fs: FeatureSet) -> None:
    """Run the compiled feature step once on a throwaway state, so that a service's first real bar does
    not pay for loading it (about a second)."""
    ring, state = new_state(fs)
    x = np.ones(d.IN_CONTEXT + len(fs.context_symbols))
    x[d.IN_OPEN_TIME] = x[d.IN_EMPTY] = 0.0
    d.step(ring, state, fs.spec, x, np.zeros(len(fs.names)))
