"""The service framework, the featurizer and the model service, on the in-memory bus (no processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from dope.bars import bars_from_frame
from dope.config import DopeConfig, config_from_dict
from dope.features import OnlineFeaturizer, default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import AnyMessage, Bar, Features, Heartbeat, Score
from dope.models import make_model
from dope.models.registry import FeatureVersionError, Registry
from dope.services.base import (
    Service,
    ServiceLogFilter,
    endpoint_of,
    load_service_config,
    receive_loop,
    service_main,
)
from dope.services.featurizer import FeaturizerService
from dope.services.model import ModelService
from dope.transport import InMemoryBus, Subscriber, ZmqPublisher, ZmqSubscriber

INTERVAL = 10_000
START = 1_704_067_200_000  # 2024-01-01


def synthetic_bars(symbols: list[str], n: int, seed: int = 3) -> dict[str, list[Bar]]:
    """``n`` synthetic 10 s bars per symbol, as messages."""
    frames = generate_bars(symbols, START, START + n * INTERVAL, INTERVAL, seed=seed)
    return {s: bars_from_frame(frames[s], INTERVAL) for s in symbols}


def register_models(root: Path, kinds: dict[str, dict[str, Any]], n_bars: int = 400,
                    roles: dict[str, str] | None = None) -> dict[str, str]:
    """Fit small models of ``kinds`` on synthetic bars and register them; ``{kind: model_id}``."""
    fs = default_feature_set(INTERVAL)
    frame = generate_bars(["BTCUSDT"], START - n_bars * INTERVAL, START, INTERVAL, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(root)
    ids = {}
    for kind, params in kinds.items():
        model = make_model(kind, **params).fit(X, y)
        ids[kind] = registry.register(model, feature_set=fs, symbol="BTCUSDT", interval_ms=INTERVAL,
                                      train_start_ms=int(frame["open_time"].iloc[0]), train_end_ms=START)
    for kind, role in (roles or {}).items():
        registry.promote(ids[kind], role)
    return ids


def run_service(service: Service, feed: list[AnyMessage], bus: InMemoryBus, until: Any) -> None:
    """Publish ``feed`` from a fake upstream, run ``service`` until ``until()`` is true (5 s at most)."""
    upstream = bus.publisher("upstream")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        for msg in feed:
            upstream.publish(msg)
        for _ in range(500):
            await asyncio.sleep(0.01)
            if until():
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def drain(sub: Subscriber) -> list[AnyMessage]:
    found = []
    while (msg := sub.receive(0)) is not None:
        found.append(msg)
    return found


class Exploding(Service):
    """Raises on every bar with a NaN close, keeps the rest."""

    seen: list[int]

    def handle(self, msg: AnyMessage) -> None:
        if isinstance(msg, Bar) and math.isnan(msg.close):
            raise ValueError("NaN close")
        if isinstance(msg, Bar):
            self.seen = [*getattr(self, "seen", []), msg.open_time]


def test_a_failing_handler_is_counted_and_the_loop_goes_on() -> None:
    bus = InMemoryBus()
    beats = bus.subscriber(["heartbeat."])
    service = Exploding("echo", bus.publisher("echo"), [bus.subscriber(["bar."])], heartbeat_ms=20)
    bars = synthetic_bars(["BTCUSDT"], 5)["BTCUSDT"]
    import msgspec

    feed: list[AnyMessage] = [bars[0], msgspec.structs.replace(bars[1], close=math.nan), *bars[2:]]
    run_service(service, feed, bus, lambda: service.counters["handled"] + service.counters["errors"] >= 5)
    assert service.counters["errors"] == 1 and service.counters["handled"] == 4
    assert service.seen == [b.open_time for b in bars if b is not bars[1]]
    last = [m for m in drain(beats) if isinstance(m, Heartbeat)][-1]
    assert last.service == "echo" and last.counters["errors"] == 1 and last.counters["handled"] == 4
    assert last.counters["last_event_ms"] == bars[-1].event_time


def test_receive_loop_delivers_from_several_subscribers_and_idles() -> None:
    bus = InMemoryBus()
    subs = [bus.subscriber(["bar."]), bus.subscriber(["features."])]
    pub = bus.publisher("p")
    bar = synthetic_bars(["BTCUSDT"], 1)["BTCUSDT"][0]
    pub.publish(bar)
    got: list[AnyMessage] = []
    idles = []

    async def main() -> None:
        stop = asyncio.Event()

        def idle() -> None:
            idles.append(1)
            if len(idles) >= 3:
                stop.set()

        await receive_loop(subs, stop, got.append, timeout_ms=5, on_idle=idle)

    asyncio.run(main())
    assert len(got) == 1 and len(idles) == 3


def _two_subscribers(kind: str, stack: contextlib.ExitStack) -> tuple[list[Subscriber], Any]:
    """Two subscribers (``zmq``: real SUB sockets on loopback; ``memory``: one in-memory bus) and a publisher
    that only the second one hears."""
    if kind == "memory":
        bus = InMemoryBus()
        return [bus.subscriber(["features."]), bus.subscriber(["bar."])], bus.publisher("p")
    silent = stack.enter_context(ZmqPublisher("tcp://127.0.0.1:*", "silent"))
    pub = stack.enter_context(ZmqPublisher("tcp://127.0.0.1:*", "p"))
    subs = [stack.enter_context(ZmqSubscriber([silent.endpoint], ["features."])),
            stack.enter_context(ZmqSubscriber([pub.endpoint], ["bar."]))]
    assert pub.wait_for_subscriptions(1, 5_000)
    return cast(list[Subscriber], subs), pub


def _publish_later(pub: Any, msgs: list[Bar], after_s: float, gap_s: float = 0.0) -> tuple[threading.Thread, list[float]]:
    """Publish ``msgs`` from another thread, the first ``after_s`` from now, then ``gap_s`` apart; and the
    times they were sent."""
    sent: list[float] = []

    def send() -> None:
        time.sleep(after_s)
        for msg in msgs:
            sent.append(time.monotonic())
            pub.publish(msg)
            time.sleep(gap_s)

    sender = threading.Thread(target=send)
    sender.start()
    return sender, sent


@pytest.mark.parametrize("kind", ["zmq", "memory"])
def test_the_receive_loop_waits_on_all_its_subscribers_at_once(kind: str) -> None:
    """A message on the second of two subscribers wakes the loop at once, and an idle loop waits its whole
    timeout on both. (Polling each in turn for a share of the timeout did neither: it woke eight times a
    timeout, and a message on the other subscriber waited up to a share, 50 ms here.)"""
    bar = synthetic_bars(["BTCUSDT"], 1)["BTCUSDT"][0]
    idles: list[float] = []
    handled: list[float] = []
    with contextlib.ExitStack() as stack:
        subs, pub = _two_subscribers(kind, stack)

        async def main() -> None:
            stop = asyncio.Event()

            def on_idle() -> None:
                idles.append(time.monotonic())
                if len(idles) >= 4:
                    stop.set()

            await receive_loop(subs, stop, lambda m: handled.append(time.monotonic()), timeout_ms=400,
                               on_idle=on_idle)

        sender, sent = _publish_later(pub, [bar], 0.5)  # while the loop waits (idles come 400 ms apart)
        asyncio.run(asyncio.wait_for(main(), 10))
        sender.join()
    assert len(handled) == 1 and handled[0] - sent[0] < 0.025
    gaps = [b - a for a, b in zip(idles, idles[1:], strict=False)]
    assert all(gap >= 0.3 for gap in gaps), gaps


@pytest.mark.parametrize("kind", ["zmq", "memory"])
def test_a_settling_loop_handles_a_burst_together_once_it_has_settled(kind: str) -> None:
    """``settle_ms`` (off-path services): three messages 10 ms apart are all handled 60 ms after the first
    arrived, in one go, and the event loop (heartbeats) runs while the burst settles."""
    bars = synthetic_bars(["BTCUSDT"], 3)["BTCUSDT"]
    handled: list[float] = []
    ticks: list[float] = []
    with contextlib.ExitStack() as stack:
        subs, pub = _two_subscribers(kind, stack)

        async def main() -> None:
            stop = asyncio.Event()

            def handle(msg: AnyMessage) -> None:
                handled.append(time.monotonic())
                if len(handled) == len(bars):
                    stop.set()

            async def heartbeats() -> None:
                while not stop.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.005)

            beats = asyncio.create_task(heartbeats())
            await receive_loop(subs, stop, handle, timeout_ms=1_000, settle_ms=60)
            await beats

        sender, sent = _publish_later(pub, bars, 0.2, 0.01)
        asyncio.run(asyncio.wait_for(main(), 10))
        sender.join()
    assert len(handled) == 3 and handled[0] - sent[0] >= 0.055  # left queued while the burst settled
    assert handled[-1] - handled[0] < 0.005  # then handled together
    assert sum(sent[0] < t < handled[0] for t in ticks) >= 5  # the event loop ran all along


def test_a_service_waits_as_long_as_its_wait_ms_says_before_every_receive() -> None:
    """``Service.wait_ms`` is asked before each wait and the wait honours it (the rendezvous sleeps until a
    deadline this way): three waits of 60 ms, then waits of 1 ms."""

    class Sleeper(Service):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.asked: list[float] = []
            self.idles: list[float] = []
            self.stop = asyncio.Event()

        def wait_ms(self) -> int:
            self.asked.append(time.monotonic())
            return 60 if len(self.asked) <= 4 else 1  # the loop asks once at its start, then before each wait

        def on_idle(self) -> None:
            self.idles.append(time.monotonic())
            if len(self.idles) >= 8:
                self.stop.set()

    bus = InMemoryBus()
    service = Sleeper("sleeper", bus.publisher("sleeper"), [bus.subscriber(["bar."])], heartbeat_ms=1_000)

    asyncio.run(asyncio.wait_for(service.run(service.stop), 10))
    gaps = [b - a for a, b in zip(service.idles, service.idles[1:], strict=False)]
    assert len(service.asked) >= 8
    assert all(gap >= 0.05 for gap in gaps[:2])      # the first waits: 60 ms each
    assert all(gap < 0.05 for gap in gaps[3:])       # then 1 ms each


class _Stream:
    """A subscriber stub: ``receive(0)`` gives ``ready()``'s message (None: nothing queued), a timed receive
    always gets one (a message that arrives while the loop waits)."""

    def __init__(self, msg: AnyMessage, ready: Any) -> None:
        self.msg, self.ready = msg, ready

    def receive(self, timeout_ms: int) -> AnyMessage | None:
        return self.ready() if timeout_ms <= 0 else self.msg


def _loop(sub: _Stream, handle: Any, timeout_ms: int, on_idle: Any) -> tuple[int, asyncio.Event]:
    """Run ``receive_loop`` over ``sub``; how many times another task of the event loop ran meanwhile."""
    ticks = 0

    async def main() -> asyncio.Event:
        nonlocal ticks
        stop = asyncio.Event()

        async def other() -> None:  # e.g. the heartbeats
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await receive_loop([cast(Subscriber, sub)], stop, lambda m: handle(m, stop), timeout_ms=timeout_ms,
                           on_idle=lambda: on_idle(stop))
        await task
        return stop

    stop = asyncio.run(main())
    return ticks, stop


def test_receive_loop_idles_and_yields_while_messages_keep_coming() -> None:
    bar = synthetic_bars(["BTCUSDT"], 1)["BTCUSDT"][0]
    handled, idles = [0], [0]

    def handle(msg: AnyMessage, stop: asyncio.Event) -> None:
        handled[0] += 1
        if handled[0] >= 300_000:  # the old loop never idled under a steady stream: give up
            stop.set()

    def idle(stop: asyncio.Event) -> None:
        idles[0] += 1
        if idles[0] >= 3:
            stop.set()

    ticks, _ = _loop(_Stream(bar, lambda: bar), handle, 2, idle)
    assert idles[0] == 3 and handled[0] < 300_000  # deadlines are checked every timeout_ms under load
    assert ticks >= 2  # the other tasks (heartbeats, signal handlers) ran at each idle before the stop


def test_receive_loop_handles_a_message_that_arrives_while_waiting_without_idling() -> None:
    bar = synthetic_bars(["BTCUSDT"], 1)["BTCUSDT"][0]
    handled, idles = [0], [0]

    def handle(msg: AnyMessage, stop: asyncio.Event) -> None:
        handled[0] += 1
        if handled[0] >= 20:
            stop.set()

    def idle(stop: asyncio.Event) -> None:
        idles[0] += 1

    _loop(_Stream(bar, lambda: None), handle, 60_000, idle)
    assert handled[0] == 20 and idles[0] == 0  # nothing but the message runs on a wake-up (the bar path)


def test_reject_counts_by_kind_and_logs_with_the_symbol(caplog: pytest.LogCaptureFixture) -> None:
    bus = InMemoryBus()
    service = Service("svc", bus.publisher("svc"))
    with caplog.at_level(logging.WARNING):
        service.reject("nan_prediction", "NaN for bar 7", "ETHUSDT")
        service.reject("nan_prediction", "NaN for bar 8", "ETHUSDT")
    assert service.heartbeat_counters()["rejected.nan_prediction"] == 2
    assert "[ETHUSDT] NaN for bar 7" in caplog.text


def test_log_filter_names_service_and_symbol() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert ServiceLogFilter("featurizer").filter(record)
    assert record.service == "featurizer" and record.symbol == "-"  # type: ignore[attr-defined]


def test_endpoints_and_json_config(tmp_path: Path) -> None:
    config = config_from_dict({"bus": {"publish": "tcp://127.0.0.1:7001"},
                               "services": {"trader": "tcp://127.0.0.1:7002"}})
    assert endpoint_of(config, "collector") == "tcp://127.0.0.1:7001"
    assert endpoint_of(config, "trader") == "tcp://127.0.0.1:7002"
    path = tmp_path / "c.json"
    import json

    import msgspec

    path.write_text(json.dumps(msgspec.to_builtins(config)))
    assert load_service_config(str(path)) == config


def test_service_main_reports_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[services]\ntrader = 'localhost:1'\n")
    assert service_main(lambda config, **_: None, ["--config", str(bad)], prog="dope.services.x") == 2
    assert "services.trader" in capsys.readouterr().err


# ---- featurizer ------------------------------------------------------------------------------

def test_featurizer_publishes_the_online_features_and_counts_warmup_and_rejects() -> None:
    bus = InMemoryBus(hwm=10_000)
    fs = default_feature_set(INTERVAL)
    out = bus.subscriber(["features."])
    service = FeaturizerService("featurizer", bus.publisher("featurizer"), [bus.subscriber(["bar."])], fs,
                                ["BTCUSDT", "ETHUSDT"], catch_up=False)
    bars = synthetic_bars(["BTCUSDT", "ETHUSDT"], fs.warmup + 20)
    feed: list[AnyMessage] = [b for pair in zip(bars["BTCUSDT"], bars["ETHUSDT"], strict=True) for b in pair]
    import msgspec

    feed.insert(10, msgspec.structs.replace(bars["BTCUSDT"][0], symbol="DOGEUSDT"))  # unknown symbol
    feed.insert(20, bars["BTCUSDT"][3])  # out of order: rejected by the featurizer
    run_service(service, feed, bus, lambda: service.counters["handled"] >= len(feed))
    got = [m for m in drain(out) if isinstance(m, Features)]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        direct = OnlineFeaturizer(fs, symbol)
        expected = [v for v in map(direct.update, bars[symbol]) if v is not None]
        mine = [m for m in got if m.symbol == symbol]
        assert [(m.open_time, m.values) for m in mine] == [(e.open_time, e.values) for e in expected]
        assert len(mine) == 21
    counters = service.heartbeat_counters()
    assert counters["rejected.unknown_symbol"] == 1 and counters["rejected_order"] == 1
    assert counters["warmup"] == 2 * (fs.warmup - 1) and counters["features"] == 42


# ---- model service ---------------------------------------------------------------------------

def features_stream(n: int, version: str | None = None) -> list[Features]:
    fs = default_feature_set(INTERVAL)
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    vectors = [v for v in map(featurizer.update, synthetic_bars(["BTCUSDT"], fs.warmup + n - 1)["BTCUSDT"])
               if v is not None]
    if version is None:
        return vectors
    import msgspec

    return [msgspec.structs.replace(v, feature_version=version) for v in vectors]


def model_service(bus: InMemoryBus, root: Path, target: str, **kwargs: Any) -> ModelService:
    version = default_feature_set(INTERVAL).version
    return ModelService("model", bus.publisher("model"), [bus.subscriber(["features."])], Registry(root),
                        target, version, **kwargs)


def test_model_service_scores_like_the_model_and_keeps_the_lookback(tmp_path: Path) -> None:
    ids = register_models(tmp_path, {"ridge": {}, "momentum": {}})
    registry = Registry(tmp_path)
    bus = InMemoryBus(hwm=10_000)
    out = bus.subscriber(["score."])
    service = model_service(bus, tmp_path, ids["ridge"])
    vectors = features_stream(30)
    run_service(service, list(vectors), bus, lambda: service.counters["handled"] >= 30)
    scores = [m for m in drain(out) if isinstance(m, Score)]
    model, _ = registry.load(ids["ridge"])
    expected = model.predict_many(np.array([v.values for v in vectors]))
    assert [s.prediction for s in scores] == pytest.approx(expected.tolist(), abs=1e-12)
    assert all(s.model_id == ids["ridge"] and s.model_kind == "ridge" and s.latency_us >= 0 for s in scores)
    assert [s.open_time for s in scores] == [v.open_time for v in vectors]


def test_model_service_rejects_bad_vectors_and_goes_on(tmp_path: Path) -> None:
    ids = register_models(tmp_path, {"ridge": {}})
    bus = InMemoryBus(hwm=10_000)
    out = bus.subscriber(["score."])
    service = model_service(bus, tmp_path, ids["ridge"])
    good = features_stream(3)
    import msgspec

    feed: list[AnyMessage] = [
        good[0], features_stream(1, version="0123456789ab")[0],
        msgspec.structs.replace(good[1], values=[math.nan] * len(good[1].values)),
        msgspec.structs.replace(good[1], values=good[1].values[:-1]), good[2]]
    run_service(service, feed, bus, lambda: service.counters["handled"] >= 5)
    scores = [m for m in drain(out) if isinstance(m, Score)]
    assert [m.abstained for m in scores] == ["", "bad_input", "bad_input", "bad_input", ""]  # nobody waits
    assert all(math.isnan(m.prediction) for m in scores[1:4])
    counters = service.heartbeat_counters()
    assert counters["rejected.feature_version"] == 1 and counters["rejected.bad_value"] == 1
    assert counters["rejected.feature_count"] == 1 and counters["errors"] == 0


def test_model_service_refuses_a_model_of_another_feature_version(tmp_path: Path) -> None:
    ids = register_models(tmp_path, {"zero": {}})
    bus = InMemoryBus()
    service = ModelService("model", bus.publisher("model"), [], Registry(tmp_path), ids["zero"], "ffffffffffff")
    with pytest.raises(FeatureVersionError, match="feature set"):
        asyncio.run(service.setup())


def test_a_role_deployment_follows_a_promotion_without_restart(tmp_path: Path) -> None:
    ids = register_models(tmp_path, {"ridge": {}, "zero": {}}, roles={"ridge": "champion"})
    bus = InMemoryBus(hwm=10_000)
    out = bus.subscriber(["score."])
    service = model_service(bus, tmp_path, "role:champion")
    vectors = features_stream(6)
    run_service(service, vectors[:3], bus, lambda: service.counters["handled"] >= 3)
    Registry(tmp_path).promote(ids["zero"], "champion")
    run_service(service, vectors[3:], bus, lambda: service.counters["handled"] >= 6)
    scores = [m for m in drain(out) if isinstance(m, Score)]
    assert [s.model_id for s in scores] == [ids["ridge"]] * 3 + [ids["zero"]] * 3
    assert service.counters["reloads"] == 1


def test_a_role_without_holder_waits_and_counts(tmp_path: Path) -> None:
    register_models(tmp_path, {"zero": {}})
    bus = InMemoryBus(hwm=10_000)
    service = model_service(bus, tmp_path, "role:champion")
    run_service(service, list(features_stream(2)), bus, lambda: service.counters["handled"] >= 2)
    assert service.counters["no_model"] == 2 and service.counters["scores"] == 0


def test_default_config_has_the_service_tables() -> None:
    config = DopeConfig()
    assert config.models.deploy == () and config.supervisor.restart_min_ms > 0
    with pytest.raises(Exception, match="endpoint"):
        config_from_dict({"models": {"deploy": [{"model": "x", "endpoint": "localhost"}]}})


def test_the_model_service_warms_the_models_fast_path_before_the_first_vector(tmp_path: Path) -> None:
    ids = register_models(tmp_path, {"ridge": {}})
    service = model_service(InMemoryBus(), tmp_path, ids["ridge"])
    calls: list[tuple[int, ...]] = []
    from dope.models.registry import Registry as RealRegistry

    class Spy(RealRegistry):
        def load(self, model_id: str, feature_version: str | None = None) -> tuple[Any, dict[str, Any]]:
            model, meta = super().load(model_id, feature_version=feature_version)
            predict = model.predict_one

            def spied(window: np.ndarray) -> float:
                calls.append(np.shape(window))
                return float(predict(window))

            model.predict_one = spied
            return model, meta

    service.registry = Spy(tmp_path)
    asyncio.run(service.setup())
    assert calls == [(service.loaded.n_features,)] and service.counters["warm_ups"] == 1  # type: ignore[union-attr]


def test_a_role_deployment_stops_scoring_when_its_role_is_taken_away(tmp_path: Path) -> None:
    """A shadow promoted to champion (or rejected) leaves ``role:shadow`` empty: that slot must not go on
    scoring the old holder beside the champion's own slot."""
    ids = register_models(tmp_path, {"ridge": {}, "zero": {}}, roles={"zero": "champion", "ridge": "shadow"})
    bus = InMemoryBus(hwm=10_000)
    out = bus.subscriber(["score."])
    service = model_service(bus, tmp_path, "role:shadow")
    vectors = features_stream(4)
    run_service(service, vectors[:2], bus, lambda: service.counters["handled"] >= 2)
    Registry(tmp_path).promote(ids["ridge"], "champion")
    run_service(service, vectors[2:], bus, lambda: service.counters["handled"] >= 4)
    scores = [m for m in drain(out) if isinstance(m, Score)]
    assert [s.model_id for s in scores] == [ids["ridge"]] * 2
    assert service.counters["unloads"] == 1 and service.counters["no_model"] == 2


def test_live_a_model_not_first_in_line_yields_to_the_champion_until_it_is_promoted(tmp_path: Path) -> None:
    """``models.yield_ms``: the champion scores a vector at once; the challenger beside it only ``yield_ms``
    later (its work never competes with the champion's path for the CPU). A promotion in the registry swaps
    them without a restart. Each service runs its own loop in its own thread, as in its own process."""
    from dope.config import RendezvousConfig
    from dope.rendezvous import RolesWatcher
    from dope.services.rendezvous import LiveRoles

    ids = register_models(tmp_path, {"ridge": {}, "zero": {}}, roles={"ridge": "champion", "zero": "challenger"})
    bus = InMemoryBus(hwm=10_000)
    upstream = bus.publisher("featurizer")
    handled: dict[str, list[float]] = {"ridge": [], "zero": []}

    class Timed(ModelService):
        def handle(self, msg: AnyMessage) -> None:
            handled[self.name].append(time.monotonic())
            super().handle(msg)

    def service(kind: str) -> Timed:
        lead = LiveRoles(RendezvousConfig(), RolesWatcher(tmp_path), ())
        return Timed(kind, bus.publisher(kind), [bus.subscriber(["features."])], Registry(tmp_path), ids[kind],
                     default_feature_set(INTERVAL).version, lead=lead, yield_ms=60)

    services = [service("ridge"), service("zero")]
    stops = [asyncio.Event() for _ in services]
    threads = [threading.Thread(target=asyncio.run, args=(s.run(stop),)) for s, stop in zip(services, stops, strict=True)]
    for thread in threads:
        thread.start()
    vectors = features_stream(2)
    sent: list[float] = []

    def send(vector: Features) -> None:
        sent.append(time.monotonic())
        upstream.publish(vector)
        deadline = time.monotonic() + 5
        while min(len(h) for h in handled.values()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.005)

    try:
        while not all(s.started for s in services):
            time.sleep(0.005)
        assert [s.settle_ms for s in services] == [0, 60]
        send(vectors[0])
        Registry(tmp_path).promote(ids["zero"], "champion")  # ridge becomes a challenger
        deadline = time.monotonic() + 5
        while [s.settle_ms for s in services] != [60, 0] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [s.counters["yield_ms"] for s in services] == [60, 0]
        time.sleep(0.05)  # both back in a wait
        send(vectors[1])
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(5)
    ridge, zero = ([t - s for t, s in zip(handled[k], sent, strict=True)] for k in ("ridge", "zero"))
    assert ridge[0] < 0.03 <= 0.055 <= zero[0]  # champion ridge at once, challenger zero after its yield
    assert zero[1] < 0.03 <= 0.055 <= ridge[1]  # promoted: the other way round


def test_models_yield_only_to_wall_clock_deadlines_and_only_below_the_deadline() -> None:
    """A replay's rounds wait for every model (event deadlines): yielding would only slow it, so only a live
    rendezvous (wall-clock deadlines) is followed; a yield as long as the deadline is a configuration error."""
    from dope.services.model import lead_of_config

    live = config_from_dict({"collector": {"source": "binance"}})
    assert live.models.yield_ms == 10 and lead_of_config(live) is not None
    assert lead_of_config(config_from_dict({"rendezvous": {"deadline_mode": "wall"}})) is not None
    assert lead_of_config(config_from_dict({})) is None  # the synthetic market, deadline_mode auto: event
    assert lead_of_config(config_from_dict({"collector": {"source": "binance"}, "models": {"yield_ms": 0}})) is None
    with pytest.raises(Exception, match=r"models.yield_ms \(50\) must be below rendezvous.deadline_ms \(50\)"):
        config_from_dict({"models": {"yield_ms": 50}})
    with pytest.raises(Exception, match="models.yield_ms must be >= 0"):
        config_from_dict({"models": {"yield_ms": -1}})
