"""Credit-based flow control for replays: the source runs at most a window ahead of the trader's decisions.

ZeroMQ's PUB sockets drop messages silently past their high-water mark, and a replay at full
speed produces bars far faster than the models score them. So under ``dope up`` a replayed (or
synthetic) source holds each batch of trades until the trader has decided a bar no more than
``window_ms`` of event time before the batch's last trade: the trader's ``decision.*`` messages
are the credit. What is in flight between the source and the trader is then bounded (a few
hundred bars, far below any HWM), and no stage waits long enough for a wall-clock timeout to
decide anything. The window counts from the first trade until the first decision (so it must
exceed the feature warm-up, which has no decisions: :func:`with_flow_control` adds it). A trader
silent for ``liveness_ms`` while the source waits is given up on for one window (counted
``flow_timeouts``, logged), so a dead trader never stalls the replay for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

from dope.config import DopeConfig
from dope.market.base import TradeSource
from dope.messages import Decision, Trade
from dope.transport import Subscriber

log = logging.getLogger("dope.flow")


class DecisionCredit:
    """How far the source may run: up to ``window_ms`` after the newest decided bar (of any symbol)."""

    def __init__(self, subscriber: Subscriber, window_ms: int, liveness_ms: int,
                 counters: dict[str, int] | None = None) -> None:
        self.subscriber = subscriber
        self.window_ms = window_ms
        self.liveness_ms = liveness_ms
        self.counters = counters if counters is not None else {}
        self.counters.update(flow_waits=0, flow_timeouts=0)
        self.reference: int | None = None  # the first trade's time, then the newest decided bar's close

    def allows(self, event_time_ms: int) -> bool:
        """Whether a batch ending at ``event_time_ms`` may go now (reads the decisions that arrived)."""
        if self.reference is None:
            self.reference = event_time_ms
        while (msg := self.subscriber.receive(0)) is not None:
            self._take(msg)
        return event_time_ms - self.reference <= self.window_ms

    def _take(self, msg: object) -> None:
        if isinstance(msg, Decision) and self.reference is not None:
            self.reference = max(self.reference, msg.event_time)

    async def wait(self, event_time_ms: int) -> None:
        """Return once the trader's decisions allow a batch ending at ``event_time_ms``."""
        if self.allows(event_time_ms):
            return
        self.counters["flow_waits"] += 1
        began = time.monotonic()
        while not self.allows(event_time_ms):
            if (time.monotonic() - began) * 1000 > self.liveness_ms:
                self.counters["flow_timeouts"] += 1
                log.warning("flow control: no decision from the trader within %d ms (newest decided bar closed "
                            "at %s); going on for one window", self.liveness_ms, self.reference)
                self.reference = event_time_ms
                return
            msg = self.subscriber.receive(1)
            if msg is not None:
                self._take(msg)
            await asyncio.sleep(0)

    def close(self) -> None:
        self.subscriber.close()


class CreditedSource:
    """``source`` whose batches wait for the trader's credit (a ``TradeSource`` itself)."""

    def __init__(self, source: TradeSource, credit: DecisionCredit) -> None:
        self.source = source
        self.credit = credit
        self.counters = source.counters

    @property
    def is_live(self) -> bool:
        return self.source.is_live

    @is_live.setter
    def is_live(self, value: bool) -> None:
        self.source.is_live = value

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        try:
            async for batch in self.source.trades(resume):
                if batch:
                    await self.credit.wait(batch[-1].event_time)
                yield batch
        finally:
            self.credit.close()


def with_flow_control(config: DopeConfig, source: TradeSource) -> TradeSource:
    """``source`` under the trader's credit when ``dope up`` runs a trader on a replayed or synthetic market."""
    collector = config.collector
    if (collector.source == "binance" or collector.flow_window_bars <= 0
            or "trader" not in config.supervisor.services):
        return source
    from dope.services.base import endpoint_of, service_subscriber
    from dope.services.featurizer import feature_set_of_config

    bars = feature_set_of_config(config).warmup + collector.flow_window_bars
    subscriber = service_subscriber(config, ["decision."], [endpoint_of(config, "trader")])
    credit = DecisionCredit(subscriber, bars * config.bars.interval_ms, collector.flow_liveness_ms,
                            source.counters)
    log.info("flow control: the source runs at most %d bars ahead of the trader's decisions", bars)
    return CreditedSource(source, credit)
