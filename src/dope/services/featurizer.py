"""The featurizer service: ``bar.*`` -> one :class:`~dope.features.OnlineFeaturizer` per symbol -> ``features.*``.

One feature stream for every model: the default feature set at the bar interval
(``[featurizer] context_symbols`` adds context features). Warm-up bars and rejected bars
are counted (``warmup``, ``rejected.*``) and logged; nothing kills the service. On start it
warms up from the collector's snapshot of recent bars without publishing their vectors, so
a restarted featurizer is warm at once and never re-publishes a vector.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dope.config import DopeConfig
from dope.features import FeatureSet, OnlineFeaturizer, default_feature_set
from dope.messages import AnyMessage, Bar
from dope.services.base import Service, endpoint_of, service_main, service_publisher, service_subscriber
from dope.transport import Publisher, Subscriber

CATCH_UP_TIMEOUT_MS = 2_000


class FeaturizerService(Service):
    """Feature vectors of every configured symbol's bars, published as they close."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], fs: FeatureSet,
                 symbols: Sequence[str], *, heartbeat_ms: int = 1_000, catch_up: bool = True) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms)
        self.fs = fs
        self.featurizers = {s: OnlineFeaturizer(fs, s, self.problems) for s in symbols}
        self.latest: dict[str, Bar] = {}
        self.catch_up = catch_up
        self.counters.update(bars=0, features=0, catch_up_bars=0)

    async def setup(self) -> None:
        """Warm up from the collector's recent bars (not re-published)."""
        for sub in self.subscribers if self.catch_up else []:
            for msg in sub.catch_up(CATCH_UP_TIMEOUT_MS):
                if isinstance(msg, Bar) and self._featurize(msg) is not None:
                    self.count("catch_up_bars")
        self.log.info("%s: feature set %s version %s, warm-up %d bars, symbols %s, caught up %d bars",
                      self.name, self.fs.name, self.fs.version, self.fs.warmup, sorted(self.featurizers),
                      self.counters["catch_up_bars"])

    def handle(self, msg: AnyMessage) -> None:
        if not isinstance(msg, Bar):
            return
        vector = self._featurize(msg)
        if vector is not None:
            self.publish(vector)
            self.count("features")

    def _featurize(self, bar: Bar) -> Any:
        featurizer = self.featurizers.get(bar.symbol)
        if featurizer is None:
            self.reject("unknown_symbol", f"bar of unconfigured symbol {bar.symbol!r}", bar.symbol)
            return None
        if not math.isfinite(bar.close):
            self.reject("bad_bar", f"bar {bar.open_time} has close {bar.close}", bar.symbol)
            return None
        self.count("bars")
        self.latest[bar.symbol] = bar
        return featurizer.update(bar, self.latest if self.fs.context_symbols else None)

    def extra_counters(self) -> Mapping[str, int]:
        """Warm-up, gap and rejection counts of every symbol's featurizer, summed."""
        totals: dict[str, int] = {}
        for featurizer in self.featurizers.values():
            for key, value in featurizer.counts.items():
                if key not in ("bars", "emitted"):
                    totals[key] = totals.get(key, 0) + value
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
    return FeaturizerService(name, publisher, [subscriber], feature_set_of_config(config),
                             config.collector.symbols, heartbeat_ms=config.bus.heartbeat_ms,
                             catch_up=not overrides.get("no_catch_up", False))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-catch-up", action="store_true", default=None,
                        help="do not warm up from the collector's recent bars")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.featurizer --config FILE``."""
    return service_main(build, argv, prog="dope.services.featurizer", add_arguments=_arguments,
                        default_name="featurizer")


if __name__ == "__main__":
    raise SystemExit(main())
