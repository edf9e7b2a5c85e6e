"""Credit-based flow control: a replayed source never runs more than a window ahead of the trader's decisions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import pytest

from dope.config import config_from_dict
from dope.messages import Decision, LoopProgress, Trade
from dope.services.flow import CreditedSource, DecisionCredit, TrainerHold, with_flow_control
from dope.transport import InMemoryBus

IV = 1_000


class Batches:
    """A finite source: one trade per second of event time, one batch each."""

    is_live = False

    def __init__(self, n: int) -> None:
        self.n = n
        self.counters: dict[str, int] = {"trades": 0}

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        for i in range(self.n):
            yield [Trade(symbol="BTCUSDT", event_time=i * IV, trade_id=i, price=1.0, qty=1.0, is_buyer_maker=False)]


def decision(bar: int) -> Decision:
    return Decision(symbol="BTCUSDT", event_time=bar * IV + IV - 1, open_time=bar * IV, prediction=None,
                    action="hold", target_position=0, reason="")


async def consume(source: CreditedSource, got: list[int]) -> None:
    async for batch in source.trades({}):
        got.append(batch[0].event_time // IV)


def test_the_source_waits_for_the_traders_decisions() -> None:
    bus = InMemoryBus()
    trader = bus.publisher("trader")
    source = Batches(40)
    credited = CreditedSource(source, DecisionCredit(bus.subscriber(["decision."]), 10 * IV, 60_000,
                                                     source.counters))

    async def main() -> list[int]:
        got: list[int] = []
        task = asyncio.create_task(consume(credited, got))
        await asyncio.sleep(0.05)
        held = list(got)
        trader.publish(decision(5))  # decided up to bar 5: the source may go up to 15 s past its close
        await asyncio.sleep(0.05)
        moved = list(got)
        trader.publish(decision(39))
        await asyncio.wait_for(task, 5)
        return [len(held), len(moved), len(got)]

    assert asyncio.run(main()) == [11, 16, 40]  # batches 0..10, then up to 15, then all
    assert source.counters["flow_waits"] == 2 and source.counters["flow_timeouts"] == 0


def test_a_silent_trader_is_given_up_on_for_one_window(caplog: pytest.LogCaptureFixture) -> None:
    bus = InMemoryBus()
    source = Batches(25)
    credited = CreditedSource(source, DecisionCredit(bus.subscriber(["decision."]), 10 * IV, 50, source.counters))
    got: list[int] = []
    with caplog.at_level(logging.WARNING):
        asyncio.run(asyncio.wait_for(consume(credited, got), 5))
    assert len(got) == 25 and source.counters["flow_timeouts"] == 2
    assert "no decision from the trader within 50 ms" in caplog.text


def test_flow_control_only_for_replays_with_a_trader() -> None:
    source = Batches(1)
    config = config_from_dict({"supervisor": {"services": ["collector", "trader"]}})
    credited = with_flow_control(config, source)
    assert isinstance(credited, CreditedSource)
    credited.credit.close()
    for raw in ({"collector": {"source": "binance"}}, {"collector": {"flow_window_bars": 0}},
                {"supervisor": {"services": ["collector", "featurizer"]}}):
        assert with_flow_control(config_from_dict(raw), source) is source


def hold(hold_ms: int, every_ms: int = 0) -> LoopProgress:
    return LoopProgress(symbol="BTCUSDT", event_time=0, hold_ms=hold_ms, every_ms=every_ms)


def test_the_trainer_holds_the_source_at_its_checkpoints() -> None:
    """The source waits for the trainer's first word, stops once it published a trade at or after the hold
    (plus the bar grace) and goes on when the trainer names the next hold; it writes its bars meanwhile."""
    bus = InMemoryBus()
    trader, trainer = bus.publisher("trader"), bus.publisher("trainer")
    source = Batches(40)
    flushes: list[int] = []
    trainer_hold = TrainerHold(bus.subscriber(["loop."]), 2 * IV, 60_000, source.counters)
    trainer_hold.on_hold = lambda: flushes.append(1)
    credited = CreditedSource(source, DecisionCredit(bus.subscriber(["decision."]), 100 * IV, 60_000,
                                                     source.counters), trainer_hold)

    async def main() -> list[int]:
        got: list[int] = []
        task = asyncio.create_task(consume(credited, got))
        await asyncio.sleep(0.05)
        seen = [len(got)]  # nothing before the trainer's first word
        trainer.publish(hold(0, 10 * IV))  # the first multiple of 10 s after the first trade: 10 s
        await asyncio.sleep(0.05)
        seen.append(len(got))
        trainer.publish(hold(25 * IV))
        await asyncio.sleep(0.05)
        seen.append(len(got))
        trainer.publish(hold(-1))  # no hold
        trader.publish(decision(39))
        await asyncio.wait_for(task, 5)
        return seen

    seen = asyncio.run(main())
    assert seen == [0, 13, 28]  # trades 0..12 (12 s = 10 s + grace), then 0..27 (27 s = 25 s + grace)
    assert source.counters["loop_holds"] == 3 and len(flushes) == 3 and source.counters["loop_timeouts"] == 0


def test_a_silent_trainer_is_given_up_on_for_its_hold(caplog: pytest.LogCaptureFixture) -> None:
    bus = InMemoryBus()
    trainer = bus.publisher("trainer")
    source = Batches(10)
    trainer_hold = TrainerHold(bus.subscriber(["loop."]), 0, 100, source.counters)
    credited = CreditedSource(source, DecisionCredit(bus.subscriber(["decision."]), 100 * IV, 60_000,
                                                     source.counters), trainer_hold)
    trainer.publish(hold(3 * IV))

    async def main() -> list[int]:
        got: list[int] = []
        await asyncio.wait_for(consume(credited, got), 5)
        return got

    with caplog.at_level(logging.WARNING, "dope.flow"):
        assert asyncio.run(main()) == list(range(10))
    assert source.counters["loop_timeouts"] == 1 and "no word from the trainer" in caplog.text
