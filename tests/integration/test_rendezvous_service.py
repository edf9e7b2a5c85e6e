"""The rendezvous service: in-process on the in-memory bus (promotion at run time), and as its own process
over real ZeroMQ with two fake model publishers, one slowed past the deadline."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dope.backtest import BacktestConfig, run_event
from dope.clock import SimulatedClock
from dope.config import RendezvousConfig, TraderConfig
from dope.messages import AnyMessage, Heartbeat, Prediction, Scorecard
from dope.rendezvous import RolesWatcher, ShadowAccount
from dope.rendezvous.scorecard import read_state
from dope.services.rendezvous import LiveRoles, RendezvousService, config_roles
from dope.transport import InMemoryBus, ZmqPublisher, ZmqSubscriber
from tests.unit.test_rendezvous_policy import IV, RULE, bar, feats, score, write_roles

REPO = Path(__file__).resolve().parents[2]


def test_promotion_in_the_registry_switches_the_next_round_without_restart(tmp_path: Path) -> None:
    write_roles(tmp_path, {"rf": "champion", "gbm": "challenger"})
    bus, clock = InMemoryBus(), SimulatedClock(0)
    config = RendezvousConfig(deadline_ms=50, publish_every=1)
    service = RendezvousService("rendezvous", bus.publisher("rendezvous"), [bus.subscriber(["features.", "score."])],
                                config, rule=RULE, clock=clock, roles=LiveRoles(config, RolesWatcher(tmp_path), ()),
                                scorecards=tmp_path / "cards.json")
    out = bus.subscriber(["prediction.", "scorecard."])
    upstream = bus.publisher("upstream")
    chosen: list[tuple[int, str]] = []
    for i in range(4):
        if i == 2:
            write_roles(tmp_path, {"gbm": "champion", "rf": "challenger"})  # dope models promote gbm
        for msg in (feats(i * IV), score("rf", i * IV, 0.1), score("gbm", i * IV, 0.2)):
            upstream.publish(msg)
            service.dispatch(drain_one(service))
        chosen += [(p.open_time, p.model_id) for p in received(out, Prediction)]
    assert chosen == [(0, "rf"), (IV, "rf"), (2 * IV, "gbm"), (3 * IV, "gbm")]
    service.finish()
    cards = {c.model_id: c for c in received(out, Scorecard)}
    assert cards["gbm"].role == "champion" and cards["gbm"].chosen == 2 and cards["rf"].chosen == 2
    assert read_state(tmp_path / "cards.json")["roles"] == {"gbm": "champion", "rf": "challenger"}
    service.close()


def test_scorecards_wait_for_a_quiet_bus_so_they_never_delay_a_prediction(tmp_path: Path) -> None:
    bus = InMemoryBus()
    service = RendezvousService("rendezvous", bus.publisher("rendezvous"), [],
                                RendezvousConfig(champion="rf", watch_registry=False, publish_every=1, persist_every=1),
                                rule=RULE, clock=SimulatedClock(0), scorecards=tmp_path / "cards.json",
                                event_deadlines=True)
    out = bus.subscriber(["prediction.", "scorecard."])
    for i in range(3):  # busy: messages back to back, rounds close, no quiet receive in between
        service.dispatch(feats(i * IV))
        service.dispatch(score("rf", i * IV, 0.1))
    got = received(out, object)
    assert [type(m) for m in got] == [Prediction] * 3 and not (tmp_path / "cards.json").exists()
    service.on_idle()  # the receive loop found the bus quiet
    assert [type(m) for m in received(out, object)] == [Scorecard] and (tmp_path / "cards.json").exists()
    assert service.receive_timeout_ms == 50  # event deadlines: only the liveness timeout to watch
    service.close()


def test_the_rendezvous_sleeps_until_its_next_deadline_not_on_a_fixed_tick() -> None:
    """Idle, it waits IDLE_WAIT_MS per receive (was: poll_ms, 200 wake-ups a second); with a round open, until
    that round's deadline and never past poll_ms, so a deadline is met as before."""
    from dope.services.rendezvous import IDLE_WAIT_MS

    bus, clock = InMemoryBus(), SimulatedClock(0)
    config = RendezvousConfig(champion="rf", challengers=("gbm",), deadline_ms=12, poll_ms=5, watch_registry=False)
    service = RendezvousService("rendezvous", bus.publisher("rendezvous"), [], config, rule=RULE, clock=clock,
                                scorecards=None)
    assert service.wait_ms() == IDLE_WAIT_MS > config.poll_ms
    clock.advance_to(IV)  # the vector of the bar at 0 arrives
    service.dispatch(feats(0))
    assert service.wait_ms() == 5           # deadline 12 ms away: poll_ms first
    clock.advance_to(IV + 9)
    assert service.wait_ms() == 3           # then exactly until the deadline
    clock.advance_to(IV + 30)
    assert service.wait_ms() == 1           # overdue: at once (the next quiet receive closes it)
    service.on_idle()
    assert service.wait_ms() == IDLE_WAIT_MS
    service.close()


def drain_one(service: RendezvousService) -> AnyMessage:
    msg = service.subscribers[0].receive(0)
    assert msg is not None
    return msg


def received(sub: object, kind: type) -> list:  # type: ignore[type-arg]
    out = []
    while (msg := sub.receive(0)) is not None:  # type: ignore[attr-defined]
        if isinstance(msg, kind):
            out.append(msg)
    return out


# ---- the real process over ZeroMQ ------------------------------------------------------------------

def write_config(tmp_path: Path, pubs: dict[str, ZmqPublisher], out_endpoint: str) -> Path:
    path = tmp_path / "dope.toml"
    path.write_text(f"""
[store]
path = "{tmp_path / 'store'}"
[bus]
heartbeat_ms = 100
[services]
collector = "{pubs['collector'].endpoint}"
featurizer = "{pubs['featurizer'].endpoint}"
rendezvous = "{out_endpoint}"
[[models.deploy]]
model = "slow-rf"
endpoint = "{pubs['slow-rf'].endpoint}"
[[models.deploy]]
model = "ridge"
endpoint = "{pubs['ridge'].endpoint}"
[rendezvous]
deadline_ms = 300
deadline_mode = "wall"
watch_registry = false
champion = "slow-rf"
challengers = ["ridge"]
publish_every = 1
""", encoding="utf-8")
    return path


def collect(sub: ZmqSubscriber, until: float, until_predictions: int = 0) -> list[AnyMessage]:
    """Messages received before ``until`` (or as soon as ``until_predictions`` predictions came)."""
    got: list[AnyMessage] = []
    while time.monotonic() < until:
        msg = sub.receive(timeout_ms=50)
        if msg is not None:
            got.append(msg)
        if until_predictions and sum(isinstance(m, Prediction) for m in got) >= until_predictions:
            break
    return got


@pytest.mark.timeout(60)
def test_service_process_falls_back_when_the_champion_is_slow(tmp_path: Path) -> None:
    pubs = {name: ZmqPublisher("tcp://127.0.0.1:0", name, linger_ms=0)
            for name in ("collector", "featurizer", "slow-rf", "ridge")}
    out_endpoint = f"ipc://{tmp_path / 'rendezvous.ipc'}"
    proc = subprocess.Popen([sys.executable, "-m", "dope.services.rendezvous", "--config",
                             str(write_config(tmp_path, pubs, out_endpoint))], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stderr=subprocess.PIPE, text=True)
    sub = ZmqSubscriber([out_endpoint], ["prediction.", "scorecard.", "heartbeat."])
    try:
        for pub in pubs.values():  # the rendezvous has connected to every publisher
            assert pub.wait_for_subscriptions(1, timeout_ms=20_000), f"{pub.name} never got a subscriber"
        first = sub.receive(timeout_ms=20_000)  # its heartbeat: our subscription is in place
        assert isinstance(first, Heartbeat)
        got = run_rounds(pubs, sub)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        for pub in pubs.values():
            pub.close()
    check_outcome(got, tmp_path)


def run_rounds(pubs: dict[str, ZmqPublisher], sub: ZmqSubscriber) -> list[AnyMessage]:
    """Five bars whose champion answers only after their rounds closed (deadline 300 ms), one where it is
    in time, then a NaN score; returns what the rendezvous published."""
    for i in range(5):
        pubs["collector"].publish(bar(i * IV, 100.0 + i))
        pubs["featurizer"].publish(feats(i * IV))
        pubs["ridge"].publish(score("ridge", i * IV, 0.001 * i))
    got = collect(sub, time.monotonic() + 10, until_predictions=5)
    for i in range(5):
        pubs["slow-rf"].publish(score("slow-rf", i * IV, 0.002))  # past the deadline: late
    pubs["collector"].publish(bar(5 * IV, 106.0))
    pubs["featurizer"].publish(feats(5 * IV))
    pubs["slow-rf"].publish(score("slow-rf", 5 * IV, 0.003))
    pubs["ridge"].publish(score("ridge", 5 * IV, math.nan))  # rejected, counted: not a crash
    got += collect(sub, time.monotonic() + 10, until_predictions=1)
    pubs["collector"].publish(bar(6 * IV, 107.0))
    return got + collect(sub, time.monotonic() + 0.5)


def check_outcome(got: list[AnyMessage], tmp_path: Path) -> None:
    predictions = [m for m in got if isinstance(m, Prediction)]
    assert [(p.open_time // IV, p.model_id, p.chosen_by) for p in predictions] == [
        *((i, "ridge", "fallback") for i in range(5)), (5, "slow-rf", "champion")]
    assert all(p.missed == ["slow-rf"] for p in predictions[:5])
    assert (predictions[5].missed, predictions[5].pending) == ([], ["ridge"])  # decided on the champion's score
    beats = [m for m in got if isinstance(m, Heartbeat)]
    assert beats[-1].counters["rendezvous.rejected_non_finite"] == 1
    assert beats[-1].counters["rendezvous.late"] == 5
    assert beats[-1].counters["rendezvous.shadow_stale"] == 0
    last_cards = {c.model_id: c for c in got if isinstance(c, Scorecard)}
    assert last_cards["slow-rf"].misses == 5 and last_cards["slow-rf"].late == 5
    saved = {c["model_id"]: c for c in read_state(tmp_path / "store" / "scorecards" / "rendezvous.json")["cards"]}
    rf, ridge = saved["slow-rf"], saved["ridge"]
    assert (rf["rounds"], rf["answered"], rf["misses"], rf["late"], rf["chosen"]) == (6, 1, 5, 5, 1)
    assert (ridge["rounds"], ridge["misses"], ridge["rejected"], ridge["chosen"]) == (6, 1, 1, 5)
    check_shadow_pnl(ShadowAccount.from_state(ridge["shadow"]), [0.001 * i for i in range(5)] + [math.nan] * 2)
    check_shadow_pnl(ShadowAccount.from_state(rf["shadow"]), [math.nan] * 5 + [0.003, math.nan])  # late: no trade
    assert rf["realised"] == 6 and ridge["realised"] == 5  # every bar up to 6 realised its predecessor


def check_shadow_pnl(shadow: ShadowAccount, predictions: list[float]) -> None:
    """The service's P&L of a model is the event backtest, with the trader's configuration, of its in-time
    predictions on the bars ``run_rounds`` published."""
    t = TraderConfig()
    config = BacktestConfig(upper=t.upper, lower=t.lower, fee_rate=t.fee_rate, slippage_bps=t.slippage_bps,
                            allow_short=t.allow_short, initial_cash=t.initial_cash, fraction=t.fraction)
    closes = [100.0, 101.0, 102.0, 103.0, 104.0, 106.0, 107.0]
    bars = {"open_time": [i * IV for i in range(7)], "open": closes, "close": closes}
    expected = run_event(bars, predictions, config, interval_ms=IV)
    assert shadow.pnl == pytest.approx(float(expected.equity[-1]) - t.initial_cash, rel=1e-12, abs=1e-12)
    assert shadow.trades == 1


def test_service_module_builds_from_config_roles() -> None:
    config = RendezvousConfig(champion="a", challengers=("b",), shadows=("s",), canaries=("c",))
    roles = config_roles(config)
    assert roles.priority(True) == ("a", "b", "c") and roles.shadows == ("s",)
    assert asyncio.iscoroutinefunction(RendezvousService.run)
