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

With the DataOps loop on (``[loop] enabled`` and ``barrier``), the trainer is a second source of
credit: its :class:`~dope.messages.LoopProgress` holds the source at a market time the trainer chose
in advance (:class:`TrainerHold`), so every role change takes effect from the same bar in every run
(``docs/loop.md``, Determinism).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

from dope.config import DopeConfig
from dope.market.base import TradeSource
from dope.messages import Decision, LoopProgress, Trade
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


class TrainerHold:
    """The trainer's barrier: the source stops once it published a trade of the loop's symbol at or after
    the trainer's ``hold_ms`` + ``grace_ms`` (so the bar closing at ``hold_ms`` is complete), until a
    newer hold arrives. Until the trainer's first word the source waits; a trainer silent for
    ``liveness_ms`` while the source waits is given up on for that hold (counted ``loop_timeouts``)."""

    def __init__(self, subscriber: Subscriber, grace_ms: int, liveness_ms: int,
                 counters: dict[str, int] | None = None) -> None:
        self.subscriber = subscriber
        self.grace_ms = grace_ms
        self.liveness_ms = liveness_ms
        self.counters = counters if counters is not None else {}
        self.counters.update(loop_holds=0, loop_timeouts=0)
        self.progress: LoopProgress | None = None
        self.heard_at = time.monotonic()
        self.first_trade: int | None = None
        self.newest: int | None = None
        self.given_up: int | None = None
        self.on_hold: Callable[[], None] | None = None
        """Called when the source starts waiting (the collector writes its bars to the store then)."""

    def point(self) -> int | None:
        """The trade time the source may not reach (None: no hold)."""
        progress = self.progress
        if progress is None or progress.hold_ms < 0:
            return None
        if progress.hold_ms > 0:
            return progress.hold_ms + self.grace_ms
        if progress.every_ms <= 0 or self.first_trade is None:
            return None
        return (self.first_trade // progress.every_ms + 1) * progress.every_ms + self.grace_ms

    def allows(self) -> bool:
        """Whether the next batch may go now (reads the trainer's newest hold first)."""
        while (msg := self.subscriber.receive(0)) is not None:
            self._take(msg)
        if self.progress is None:
            return False
        point = self.point()
        return point is None or point == self.given_up or self.newest is None or self.newest < point

    def _take(self, msg: object) -> None:
        if isinstance(msg, LoopProgress):
            self.progress, self.heard_at = msg, time.monotonic()

    def published(self, batch: list[Trade]) -> None:
        """Note a batch the source published."""
        symbol = self.progress.symbol if self.progress is not None else None
        for trade in batch:
            if trade.symbol == symbol:
                self.first_trade = trade.event_time if self.first_trade is None else self.first_trade
                self.newest = trade.event_time if self.newest is None else max(self.newest, trade.event_time)

    async def wait(self) -> None:
        """Return once the trainer's hold lets the next batch go."""
        if self.allows():
            return
        self.counters["loop_holds"] += 1
        if self.on_hold is not None:
            self.on_hold()
        while not self.allows():
            if (time.monotonic() - self.heard_at) * 1000 > self.liveness_ms:
                self.counters["loop_timeouts"] += 1
                self.given_up = self.point()
                log.warning("flow control: no word from the trainer within %d ms while held at %s; going on",
                            self.liveness_ms, self.given_up)
                return
            msg = self.subscriber.receive(1)
            if msg is not None:
                self._take(msg)
            await asyncio.sleep(0)

    def close(self) -> None:
        self.subscriber.close()


class CreditedSource:
    """``source`` whose batches wait for the trader's credit, and the trainer's hold if any (a ``TradeSource``)."""

    def __init__(self, source: TradeSource, credit: DecisionCredit, hold: TrainerHold | None = None) -> None:
        self.source = source
        self.credit = credit
        self.hold = hold
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
                    if self.hold is not None:
                        await self.hold.wait()
                yield batch
                if self.hold is not None:
                    self.hold.published(batch)
        finally:
            self.credit.close()
            if self.hold is not None:
                self.hold.close()


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
    return CreditedSource(source, credit, trainer_hold(config, source.counters))


def trainer_hold(config: DopeConfig, counters: dict[str, int]) -> TrainerHold | None:
    """The trainer's barrier when ``dope up`` runs the loop with ``[loop] barrier`` on."""
    if not (config.loop.enabled and config.loop.barrier):
        return None
    from dope.services.base import endpoint_of, service_subscriber

    subscriber = service_subscriber(config, ["loop."], [endpoint_of(config, "trainer")])
    log.info("flow control: the source also waits for the loop trainer's holds")
    return TrainerHold(subscriber, config.bars.grace_ms, config.collector.flow_liveness_ms, counters)
