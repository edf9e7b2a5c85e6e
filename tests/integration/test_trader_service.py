"""The trader service over real ZeroMQ: paper decisions and fills equal the backtester's event path;
bad input is counted, never fatal; the kill switch shows in equity and heartbeats."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dope.backtest.event import make_trader, run_event
from dope.clock import SimulatedClock
from dope.config import ConfigError, DopeConfig, config_from_dict
from dope.messages import AnyMessage, Decision, Equity, Fill, Heartbeat
from dope.services.trader import TraderService, build, journal_path, reset_flag_path
from dope.trading.journal import StepRecord, fold, read_journal
from dope.transport import ZmqPublisher, ZmqSubscriber
from tests.trader_helpers import make_bar, make_prediction, walk

TRADER = {"upper": 0.001, "lower": -0.001, "allow_short": True, "slippage_bps": 3.0, "initial_cash": 10_000.0,
          "symbols": ["BTCUSDT"]}


def config(collector: str, rendezvous: str, state: Path, **trader: Any) -> DopeConfig:
    return config_from_dict({
        "bus": {"snapshot": "", "heartbeat_ms": 100, "linger_ms": 0},
        "services": {"collector": collector, "rendezvous": rendezvous, "trader": "tcp://127.0.0.1:0"},
        "trader": {**TRADER, "state_dir": str(state), "journal_fsync": False, **trader}})


class Running:
    """Two test publishers (collector, rendezvous), the trader service in a thread, a subscriber to its output."""

    def __init__(self, state: Path, **trader: Any) -> None:
        self.bars = ZmqPublisher("tcp://127.0.0.1:0", "collector", linger_ms=0)
        self.preds = ZmqPublisher("tcp://127.0.0.1:0", "rendezvous", linger_ms=0)
        self.config = config(self.bars.endpoint, self.preds.endpoint, state, **trader)
        self.service: TraderService = build(self.config, no_catch_up=True)
        self.out = ZmqSubscriber([self.service.publisher.endpoint], ["decision.", "fill.", "equity.", "heartbeat."])
        self.stop = asyncio.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.service.run(self.stop),))
        self.thread.start()
        assert self.bars.wait_for_subscriptions(1, timeout_ms=5_000)
        assert self.preds.wait_for_subscriptions(1, timeout_ms=5_000)
        self.received: list[AnyMessage] = []
        self.until(lambda: any(isinstance(m, Heartbeat) for m in self.received))

    def until(self, done: Any, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            msg = self.out.receive(timeout_ms=50)
            if msg is not None:
                self.received.append(msg)
        assert done(), f"timed out; got {len(self.received)} messages"

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.received if isinstance(m, kind)]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.loop.close()
        self.service.close()
        for sock in (self.out, self.bars, self.preds):
            sock.close()


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.close()


def core_fills(bars: list, preds: list[float], running: Running) -> pd.DataFrame:  # type: ignore[type-arg]
    frame = pd.DataFrame({"open_time": [b.open_time for b in bars], "open": [b.open for b in bars],
                          "close": [b.close for b in bars]})
    return run_event(frame, np.array(preds), running.config.trader.strategy(), interval_ms=10_000,
                     symbol="BTCUSDT")


def core_orders(bars: list, preds: list[float], running: Running) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    """The trader core driven directly, as the event backtest drives it: (decision time, target) of each order."""
    clock = SimulatedClock()
    core = make_trader("BTCUSDT", running.config.trader.strategy(), clock)
    orders = []
    for bar, pred in zip(bars, preds, strict=True):
        clock.advance_to(bar.close_time)
        core.on_bar(bar.open_time, bar.open, bar.close)
        order = core.on_prediction(pred)
        if order is not None:
            orders.append((order.time_ms, order.target))
    return orders


def test_paper_decisions_and_fills_equal_the_event_backtest(running: Running) -> None:
    bars, preds = walk(300, seed=5)
    for bar, pred in zip(bars, preds, strict=True):  # as fast as possible, on two sockets
        running.bars.publish(bar)
        running.preds.publish(make_prediction(bar.open_time, pred))
    running.until(lambda: len(running.of(Decision)) >= len(bars))
    result = core_fills(bars, preds, running)

    equity = running.of(Equity)
    assert [e.open_time for e in equity] == [b.open_time for b in bars]
    assert np.array_equal([e.equity for e in equity], result.equity)          # bit for bit
    assert np.array_equal([e.position for e in equity], result.position)
    trades = result.trades
    fills = running.of(Fill)
    entries = [f for f in fills if f.client_order_id.endswith("-open")]
    assert len(entries) == len(trades) > 10
    assert [f.price for f in entries] == list(trades["entry_price"])
    assert [f.qty for f in entries] == list(trades["qty"])
    decisions = running.of(Decision)
    assert [d.open_time for d in decisions] == [b.open_time for b in bars]
    orders = core_orders(bars, preds, running)
    assert [(d.event_time, d.target_position) for d in decisions if d.action != "hold"] == orders
    filled = {int(f.client_order_id.split("-")[2]) for f in fills}
    assert filled == {t for t, _ in orders} - {bars[-1].close_time}  # the last decision waits for its open
    assert running.out.stats.as_counters().get("bus.gaps", 0) == 0


def test_bad_input_is_counted_and_the_service_goes_on(running: Running) -> None:
    bars, preds = walk(6, seed=2)
    nan_bar = make_bar(bars[2].open_time, float("nan"), 100.0)
    running.bars.publish(bars[0])
    running.preds.publish(make_prediction(bars[0].open_time, float("nan")))
    running.bars.publish(nan_bar)
    running.bars.publish(make_bar(bars[1].open_time, 100.0, 100.0, symbol="XRPUSDT"))
    for bar, pred in zip(bars[1:], preds[1:], strict=True):
        running.bars.publish(bar)
        running.preds.publish(make_prediction(bar.open_time, pred))
    running.until(lambda: len(running.of(Decision)) >= len(bars))
    first = running.of(Decision)[0]
    assert first.action == "hold" and first.prediction is None and "invalid" in first.reason
    running.until(lambda: (h := running.of(Heartbeat)) and h[-1].counters.get("rejected.bad_bar", 0) == 1
                  and h[-1].counters.get("rejected.nan_prediction", 0) == 1)
    assert running.of(Heartbeat)[-1].counters["ignored_symbols"] == 1


def test_kill_switch_shows_in_equity_and_heartbeats_and_resets_by_hand(tmp_path: Path) -> None:
    r = Running(tmp_path, allow_short=False, risk={"max_daily_loss": 100.0})
    try:
        prices = [100.0, 100.0, 100.0, 97.0, 97.0, 97.0, 97.0]
        for i, price in enumerate(prices):
            open_time = 1_700_006_400_000 + i * 10_000
            r.bars.publish(make_bar(open_time, price, price))
            r.preds.publish(make_prediction(open_time, 0.01))
        r.until(lambda: len(r.of(Equity)) >= len(prices))
        assert [e.kill_switch for e in r.of(Equity)] == [False] * 3 + [True] * 4
        r.until(lambda: r.of(Heartbeat)[-1].counters.get("kill_switch.BTCUSDT") == 1)
        reset_flag_path(r.config.trader, r.service.name).touch()
        r.until(lambda: r.of(Heartbeat)[-1].counters.get("kill_switch.BTCUSDT") == 0)
        open_time = 1_700_006_400_000 + len(prices) * 10_000
        r.bars.publish(make_bar(open_time, 97.0, 97.0))
        r.preds.publish(make_prediction(open_time, 0.01))
        r.until(lambda: len(r.of(Decision)) >= len(prices) + 2)
        assert r.of(Decision)[-1].action == "buy" and not r.of(Equity)[-1].kill_switch
    finally:
        r.close()


def test_predictions_arriving_before_their_bars_wait_for_them(running: Running) -> None:
    bars, preds = walk(40, seed=9)
    for bar, pred in zip(bars, preds, strict=True):
        running.preds.publish(make_prediction(bar.open_time, pred))
        time.sleep(0.001)
        running.bars.publish(bar)
    running.until(lambda: len(running.of(Decision)) >= len(bars))
    result = core_fills(bars, preds, running)
    assert np.array_equal([e.equity for e in running.of(Equity)], result.equity)
    assert not [d for d in running.of(Decision) if d.reason.startswith("no prediction")]


def test_a_restarted_service_compacts_its_journal_and_goes_on_where_it_stopped(tmp_path: Path) -> None:
    bars, preds = walk(90, seed=6)
    first = Running(tmp_path)
    try:
        for bar, pred in zip(bars[:60], preds[:60], strict=True):
            first.bars.publish(bar)
            first.preds.publish(make_prediction(bar.open_time, pred))
        first.until(lambda: len(first.of(Decision)) >= 60)
        with pytest.raises(ConfigError, match="already running"):
            build(first.config, no_catch_up=True)  # a second trader on the same journal is refused
    finally:
        first.close()
    journal = journal_path(first.config.trader, first.service.name)
    whole = read_journal(journal)
    second = Running(tmp_path)
    try:
        compacted = read_journal(journal)
        assert fold(compacted) == fold(whole)
        assert sum(isinstance(r, StepRecord) for r in compacted) == 1 < sum(isinstance(r, StepRecord) for r in whole)
        for bar, pred in zip(bars[60:], preds[60:], strict=True):
            second.bars.publish(bar)
            second.preds.publish(make_prediction(bar.open_time, pred))
        second.until(lambda: len(second.of(Decision)) >= 30)
        result = core_fills(bars, preds, second)
        assert np.array_equal([e.equity for e in first.of(Equity) + second.of(Equity)], result.equity)
    finally:
        second.close()


def test_bars_missed_live_are_recovered_from_the_store_before_the_next_one(tmp_path: Path) -> None:
    """A publisher restarted before this trader heard its first bars (or a queue overflowed while an order call
    waited): the bars between the last one seen and the next that arrives are read back from the store and
    stepped in order, held without a prediction, so every bar keeps its step and its mark."""
    from dope.bars import bars_to_frame
    from dope.config import TraderConfig
    from dope.store import BarStore
    from dope.transport import InMemoryBus

    bars, preds = walk(8)
    store = BarStore(tmp_path / "store")
    store.write_bars(bars_to_frame(bars[2:6]), bars[0].interval_ms)
    bus = InMemoryBus()
    out = bus.subscriber(["decision."])
    service = TraderService("trader", bus.publisher("trader"), [bus.subscriber(["bar.", "prediction."])],
                            TraderConfig(state_dir=str(tmp_path / "trader")), ["BTCUSDT"], catch_up=False,
                            store=store)
    try:
        for msg in (bars[0], make_prediction(bars[0].open_time, preds[0]), bars[1],
                    make_prediction(bars[1].open_time, preds[1]), bars[6]):  # bars 2 to 5 never arrive live
            service.handle(msg)
        decided = []
        while (msg := out.receive(0)) is not None:
            if isinstance(msg, Decision):
                decided.append(msg.open_time)
    finally:
        service.close()
    assert decided[:6] == [b.open_time for b in bars[:6]]  # 6 waits for its prediction
    assert service.counters["missed_bars"] == 4


def test_a_restarted_trader_recovers_the_bars_before_its_first_caught_up_one_from_the_store(tmp_path: Path) -> None:
    """Killed with the collector: the new collector's snapshot starts after bars the old one had stored but this
    trader never stepped. Caught up at start, the snapshot's first bar must not skip them: they are read back
    from the store and stepped first (held), so every stored bar keeps its step."""
    from dope.bars import bars_to_frame
    from dope.config import TraderConfig
    from dope.store import BarStore
    from dope.transport import InMemoryBus

    bars, preds = walk(8)
    store = BarStore(tmp_path / "store")
    store.write_bars(bars_to_frame(bars[2:6]), bars[0].interval_ms)
    config = TraderConfig(state_dir=str(tmp_path / "trader"))
    first_bus = InMemoryBus()
    first = TraderService("trader", first_bus.publisher("trader"), [first_bus.subscriber(["bar.", "prediction."])],
                          config, ["BTCUSDT"], catch_up=False, store=store)
    try:
        for msg in (bars[0], make_prediction(bars[0].open_time, preds[0]), bars[1],
                    make_prediction(bars[1].open_time, preds[1])):
            first.handle(msg)
    finally:
        first.close()
    bus = InMemoryBus()
    collector = bus.publisher("collector")
    for bar in bars[6:]:  # the restarted collector's snapshot: bars 6 and 7 only
        collector.publish(bar)
    out = bus.subscriber(["decision."])
    second = TraderService("trader", bus.publisher("trader"), [bus.subscriber(["bar.", "prediction."])],
                           config, ["BTCUSDT"], catch_up=True, store=store)
    try:
        asyncio.run(second.setup())
        decided = []
        while (msg := out.receive(0)) is not None:
            if isinstance(msg, Decision):
                decided.append(msg.open_time)
    finally:
        second.close()
    assert decided == [b.open_time for b in bars[2:]]  # 2 to 5 from the store, then 6 and 7 caught up
    assert second.counters["missed_bars"] == 4 and second.counters["catch_up_bars"] == 2
