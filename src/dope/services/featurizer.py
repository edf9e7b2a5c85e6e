"""The featurizer service: ``bar.*`` -> one :class:`~dope.features.OnlineFeaturizer` per symbol -> ``features.*``.

One feature stream for every model: the default feature set at the bar interval
(``[featurizer] context_symbols`` adds context features). With context symbols, a symbol's bar
waits for the context bars of the same open time (:class:`~dope.features.align.ContextAligner`,
up to ``context_wait_bars`` newer bars or ``context_idle_ms`` of a quiet bus), so the features do
not depend on the arrival order and equal the offline ones. Warm-up bars and rejected bars are
counted (``warmup``, ``rejected.*``) and logged; nothing kills the service. On start it warms up,
without publishing, from the store's last bars (``warm_from_store``) and then from the collector's
snapshot of recent bars, so a (re)started featurizer is warm at once and never re-publishes a vector.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from dope.bars import bars_from_frame
from dope.config import DopeConfig, FeaturizerConfig
from dope.features import FeatureSet, OnlineFeaturizer, default_feature_set
from dope.features.align import ContextAligner
from dope.features.online import load_compiled_step
from dope.messages import AnyMessage, Bar, Features
from dope.services.base import Service, endpoint_of, service_main, service_publisher, service_subscriber
from dope.store import BarStore
from dope.transport import Publisher, Subscriber

CATCH_UP_TIMEOUT_MS = 2_000


class FeaturizerService(Service):
    """Feature vectors of every configured symbol's bars, published as they close."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], fs: FeatureSet,
                 symbols: Sequence[str], *, heartbeat_ms: int = 1_000, catch_up: bool = True,
                 store: BarStore | None = None, settings: FeaturizerConfig | None = None) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms)
        self.fs = fs
        self.settings = settings or FeaturizerConfig()
        self.featurizers = {s: OnlineFeaturizer(fs, s, self.problems) for s in symbols}
        self.aligner = (ContextAligner(symbols, fs.context_symbols, fs.params.interval_ms,
                                       self.settings.context_wait_bars) if fs.context_symbols else None)
        self.catch_up = catch_up
        self.store = store
        self.warm_until: dict[str, int] = {}
        self._last_bar_ms = 0
        self.counters.update(bars=0, features=0, catch_up_bars=0, store_bars=0, already_warm=0)

    async def setup(self) -> None:
        """Warm up from the store's last bars, then from the collector's recent bars (nothing re-published)."""
        load_compiled_step(self.fs)
        if self.store is not None:
            self.count("store_bars", self._warm_up(self._stored_bars(self.store)))
        if self.catch_up:
            bars = [m for m in await self.fetch_snapshots(CATCH_UP_TIMEOUT_MS) if isinstance(m, Bar)]
            self.count("catch_up_bars", self._warm_up(bars))
        self.log.info("%s: feature set %s version %s, warm-up %d bars, symbols %s, warmed up on %d stored and "
                      "%d caught-up bars", self.name, self.fs.name, self.fs.version, self.fs.warmup,
                      sorted(self.featurizers), self.counters["store_bars"], self.counters["catch_up_bars"])

    def _stored_bars(self, store: BarStore) -> list[Bar]:
        """The last ``warmup`` stored bars of every symbol (context symbols included), by open time."""
        interval = self.fs.params.interval_ms
        frames = []
        for symbol in sorted({*self.featurizers, *self.fs.context_symbols}):
            last = store.last_bar(symbol, interval)
            if last is not None:
                end = int(last["open_time"]) + interval
                frames.append(store.read_bars(symbol, interval, end - self.fs.warmup * interval, end))
        if not frames:
            return []
        frame = pd.concat(frames, ignore_index=True).sort_values(["open_time", "symbol"], kind="stable")
        return bars_from_frame(frame.reset_index(drop=True), interval)

    def _warm_up(self, bars: Iterable[Bar]) -> int:
        """Feed ``bars`` without publishing; later bars of the same open times are skipped as already seen."""
        taken = 0
        for bar in bars:
            if bar.open_time > self.warm_until.get(bar.symbol, -(2**62)):
                self._take(bar)
                taken += 1
                self.warm_until[bar.symbol] = bar.open_time
        return taken

    def handle(self, msg: AnyMessage) -> None:
        if not isinstance(msg, Bar):
            return
        if msg.open_time <= self.warm_until.get(msg.symbol, -(2**62)):
            self.count("already_warm")  # a bar the warm-up already read (e.g. from the store)
            return
        self._last_bar_ms = self.clock.now_ms()
        self._publish(self._take(msg))

    def on_idle(self) -> None:
        """A quiet bus: stop waiting for context bars after ``context_idle_ms`` (e.g. at a replay's end)."""
        if (self.aligner is not None and self.aligner.held()
                and self.clock.now_ms() - self._last_bar_ms >= self.settings.context_idle_ms):
            self._publish(self._featurize(self.aligner.release_all()))

    def _publish(self, vectors: list[Features]) -> None:
        for vector in vectors:
            self.publish(vector)
            self.count("features")

    def _take(self, bar: Bar) -> list[Features]:
        """Take one bar in; the feature vectors it completes (its own, or bars that waited for it)."""
        if bar.symbol not in self.featurizers and bar.symbol not in self.fs.context_symbols:
            self.reject("unknown_symbol", f"bar of unconfigured symbol {bar.symbol!r}", bar.symbol)
            return []
        if not math.isfinite(bar.close):
            self.reject("bad_bar", f"bar {bar.open_time} has close {bar.close}", bar.symbol)
            return []
        self.count("bars")
        if self.aligner is None:
            return self._featurize([(bar, None)])
        return self._featurize(self.aligner.add(bar))

    def _featurize(self, released: Iterable[tuple[Bar, Mapping[str, Bar] | None]]) -> list[Features]:
        vectors = (self.featurizers[bar.symbol].update(bar, context) for bar, context in released)
        return [v for v in vectors if v is not None]

    def extra_counters(self) -> Mapping[str, int]:
        """Warm-up, gap and rejection counts of every symbol's featurizer, summed; bars held for context."""
        totals: dict[str, int] = {}
        for featurizer in self.featurizers.values():
            for key, value in featurizer.counts.items():
                if key not in ("bars", "emitted"):
                    totals[key] = totals.get(key, 0) + value
        if self.aligner is not None:
            totals.update(context_held=self.aligner.held(), context_timeouts=self.aligner.context_timeouts)
        return totals


def feature_set_of_config(config: DopeConfig) -> FeatureSet:
    """The live feature set: the default one at the bar interval with the configured context symbols."""
    return default_feature_set(config.bars.interval_ms, tuple(config.featurizer.context_symbols))


def build(config: DopeConfig, **overrides: Any) -> FeaturizerService:
    """The featurizer of ``config`` (``name``, ``catch_up`` may be overridden)."""
    name = overrides.get("name") or config.featurizer.service_name
    collector = endpoint_of(config, "collector")
    snapshots = [config.bus.snapshot] if config.bus.snapshot and not config.services.collector else []
    subscriber = service_subscriber(config, ["bar."], [collector], snapshot_endpoints=snapshots)
    publisher = service_publisher(config, name, endpoint_of(config, "featurizer"))
    store = BarStore(config.store.path) if config.featurizer.warm_from_store else None
    return FeaturizerService(name, publisher, [subscriber], feature_set_of_config(config),
                             config.collector.symbols, heartbeat_ms=config.bus.heartbeat_ms,
                             catch_up=not overrides.get("no_catch_up", False), store=store,
                             settings=config.featurizer)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-catch-up", action="store_true", default=None,
                        help="do not warm up from the collector's recent bars")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.featurizer --config FILE``."""
    return service_main(build, argv, prog="dope.services.featurizer", add_arguments=_arguments,
                        default_name="featurizer")


if __name__ == "__main__":
    raise SystemExit(main())
