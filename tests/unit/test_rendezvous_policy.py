"""The rendezvous policy on a simulated clock: deadline, fallback, shadows, canaries, roles, bad scores."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from dope.clock import SimulatedClock
from dope.config import RendezvousConfig, TraderConfig
from dope.messages import Bar, Features, Score
from dope.rendezvous import Rendezvous, Roles, RolesWatcher
from dope.services.rendezvous import deployed_roles, shadow_rule

SYM = "BTCUSDT"
IV = 10_000
RULE = shadow_rule(TraderConfig())  # the trader's rule, for the scorecards' shadow accounts


def feats(t: int, symbol: str = SYM, version: str = "v1") -> Features:
    return Features(symbol=symbol, event_time=t + IV - 1, open_time=t, feature_set="default",
                    feature_version=version, values=[0.5, 1.5], seq=t // IV + 1, source="featurizer")


def score(model: str, t: int, pred: float, version: str = "v1", latency: int = 100, symbol: str = SYM) -> Score:
    return Score(symbol=symbol, event_time=t + IV - 1, open_time=t, model_id=model, model_kind="k",
                 feature_version=version, prediction=pred, latency_us=latency)


def bar(t: int, close: float, symbol: str = SYM) -> Bar:
    return Bar(symbol=symbol, event_time=t + IV - 1, interval_ms=IV, open_time=t, close_time=t + IV - 1,
               open=close, high=close, low=close, close=close, volume=1.0, quote_volume=close, count=1,
               taker_buy_volume=0.5, taker_buy_quote_volume=close / 2, vwap=close, empty=False,
               first_trade_id=1, last_trade_id=1)


ROLES = Roles(champion="rf", challengers=("gbm", "ridge"), shadows=("lstm",), canaries=("zero",))


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(1_000_000)


def make(clock: SimulatedClock, roles: Roles = ROLES, **config: object) -> Rendezvous:
    return Rendezvous(RendezvousConfig(deadline_ms=50, **config), roles, clock, rule=RULE)  # type: ignore[arg-type]


def test_champion_in_time_is_chosen_at_once_and_the_round_closes_when_everyone_answered(
        clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    clock.advance_to(clock.now_ms() + 1)
    rv.add_score(score("gbm", 0, 0.001, latency=10))
    assert rv.due(clock.now_ms()) == []  # a challenger's answer cannot decide while the champion may answer
    clock.advance_to(clock.now_ms() + 1)
    rv.add_score(score("rf", 0, 0.002, latency=20))
    [p] = rv.due(clock.now_ms())  # live: nothing later can change the choice, so it leaves now
    assert (p.model_id, p.chosen_by, p.prediction) == ("rf", "champion", 0.002)
    assert p.answered == ["rf", "gbm"] and p.missed == [] and p.pending == ["ridge", "zero", "lstm"]
    assert p.latencies_us == {"gbm": 10, "rf": 20}
    assert p.deadline_ms == 50 and p.open_time == 0 and p.event_time == IV - 1 and p.symbol == SYM
    for i, model in enumerate(("ridge", "lstm", "zero")):
        clock.advance_to(clock.now_ms() + 1)
        rv.add_score(score(model, 0, 0.01 * (i + 1), latency=30 + 10 * i))
        assert rv.due(clock.now_ms()) == []  # one prediction per round
    assert rv.open_rounds() == 0  # closed once everyone answered, before the deadline
    cards = {mid: rv.book.card(mid, SYM) for mid in ("rf", "gbm", "ridge", "lstm", "zero")}
    assert {mid: (c.rounds, c.answered, c.misses, c.chosen) for mid, c in cards.items()} == {
        "rf": (1, 1, 0, 1), "gbm": (1, 1, 0, 0), "ridge": (1, 1, 0, 0), "lstm": (1, 1, 0, 0), "zero": (1, 1, 0, 0)}
    assert rv.counters["chosen_champion"] == 1 and rv.counters["rounds_closed"] == 1


def test_a_settled_round_still_scores_the_models_that_miss_its_deadline(clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    rv.add_score(score("rf", 0, 0.002))
    [p] = rv.due(clock.now_ms())
    assert p.pending == ["gbm", "ridge", "zero", "lstm"]
    rv.add_score(score("gbm", 0, 0.001))
    clock.advance_to(clock.now_ms() + 50)
    assert rv.due(clock.now_ms()) == [] and rv.open_rounds() == 0  # the deadline closes it: no second prediction
    assert [(m, rv.book.card(m, SYM).misses) for m in ("rf", "gbm", "ridge", "zero", "lstm")] == [
        ("rf", 0), ("gbm", 0), ("ridge", 1), ("zero", 1), ("lstm", 1)]


def test_when_the_champion_abstains_the_first_challenger_decides_not_a_lower_one(clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    rv.add_score(score("ridge", 0, 0.3))
    rv.add_score(Score(symbol=SYM, event_time=IV - 1, open_time=0, model_id="rf", model_kind="k",
                       feature_version="v1", prediction=math.nan, latency_us=0, abstained="warmup"))
    assert rv.due(clock.now_ms()) == []  # gbm comes before ridge and may still answer
    rv.add_score(score("gbm", 0, 0.2))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by, p.answered, p.pending) == ("gbm", "fallback", ["gbm", "ridge"], ["zero", "lstm"])


def test_with_event_deadlines_a_round_is_decided_only_when_complete(clock: SimulatedClock) -> None:
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), Roles(champion="rf", challengers=("gbm",)), clock, rule=RULE,
                    event_deadlines=True)
    rv.open_round(feats(0))
    rv.add_score(score("rf", 0, 0.002))
    clock.advance_to(clock.now_ms() + 5_000)
    assert rv.due(clock.now_ms()) == []  # a replay's predictions must not depend on which score came first
    rv.add_score(score("gbm", 0, 0.001))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.answered, p.pending) == ("rf", ["rf", "gbm"], [])


def test_champion_late_falls_back_to_first_challenger_in_configured_order(clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    rv.add_score(score("ridge", 0, 0.3))
    rv.add_score(score("gbm", 0, 0.2))
    clock.advance_to(clock.now_ms() + 49)
    assert rv.due(clock.now_ms()) == []
    clock.advance_to(clock.now_ms() + 1)
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by, p.prediction) == ("gbm", "fallback", 0.2)
    assert p.missed == ["rf", "zero", "lstm"]


def test_late_score_counts_as_a_miss_and_is_still_recorded(clock: SimulatedClock) -> None:
    rv = make(clock, roles=Roles(champion="rf", challengers=("gbm",)))
    rv.open_round(feats(0))
    rv.add_score(score("gbm", 0, 0.2))
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert p.chosen_by == "fallback"
    clock.advance_to(clock.now_ms() + 30)
    rv.add_score(score("rf", 0, 0.1, latency=80_000))
    rv.add_score(score("rf", 0, 0.1))  # the same late score again: a duplicate, not a second late one
    card = rv.book.card("rf", SYM)
    assert (card.rounds, card.answered, card.misses, card.late) == (1, 0, 1, 1)
    assert rv.counters["late"] == 1 and rv.counters["rejected_duplicate"] == 1
    assert card.latency_us.values().tolist() == [80_000.0]
    rv.add_bar(bar(0, 100.0))
    rv.add_bar(bar(IV, 101.0))  # realises bar 0: the late prediction is scored too
    assert card.realised == 1 and rv.book.card("gbm", SYM).realised == 1


def test_score_after_the_deadline_but_before_closing_is_late(clock: SimulatedClock) -> None:
    rv = make(clock, roles=Roles(champion="rf", challengers=("gbm",)))
    rv.open_round(feats(0))
    rv.add_score(score("gbm", 0, 0.2))
    clock.advance_to(clock.now_ms() + 51)
    rv.add_score(score("rf", 0, 0.1))  # the loop had not called due yet: still too late
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.missed) == ("gbm", ["rf"])
    assert rv.book.card("rf", SYM).late == 1 and rv.book.card("rf", SYM).misses == 1


def test_nobody_in_time_gives_an_explicit_no_prediction(clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert p.prediction is None and p.chosen_by == "none" and p.model_id == ""
    assert p.answered == [] and p.missed == ["rf", "gbm", "ridge", "zero", "lstm"]
    assert rv.counters["chosen_none"] == 1


def test_shadow_scores_but_is_never_chosen(clock: SimulatedClock) -> None:
    rv = make(clock)
    rv.open_round(feats(0))
    rv.add_score(score("lstm", 0, 0.9))
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert p.chosen_by == "none" and p.answered == ["lstm"] and p.latencies_us == {"lstm": 100}
    assert rv.book.card("lstm", SYM).answered == 1 and rv.book.card("lstm", SYM).chosen == 0


@pytest.mark.parametrize(("allowed", "expected"), [(True, ("zero", "fallback")), (False, ("", "none"))])
def test_canary_is_the_last_resort_only_if_allowed(clock: SimulatedClock, allowed: bool,
                                                    expected: tuple[str, str]) -> None:
    rv = make(clock, canary_fallback=allowed)
    rv.open_round(feats(0))
    rv.add_score(score("zero", 0, 0.0))
    rv.add_score(score("lstm", 0, 0.5))
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by) == expected


def test_promotion_at_run_time_switches_from_the_next_round(clock: SimulatedClock) -> None:
    before = Roles(champion="rf", challengers=("gbm",))
    rv = make(clock, roles=before)
    rv.open_round(feats(0))
    rv.set_roles(Roles(champion="gbm", challengers=("rf",)))  # promoted while round 0 is open
    rv.open_round(feats(IV))
    for t in (0, IV):
        rv.add_score(score("rf", t, 0.1))
        rv.add_score(score("gbm", t, 0.2))
    first, second = rv.due(clock.now_ms())
    assert (first.open_time, first.model_id, first.chosen_by) == (0, "rf", "champion")
    assert (second.open_time, second.model_id, second.chosen_by) == (IV, "gbm", "champion")
    assert rv.counters["role_changes"] == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_is_rejected_and_treated_as_missing(clock: SimulatedClock, bad: float) -> None:
    rv = make(clock, roles=Roles(champion="rf", challengers=("gbm",)))
    rv.open_round(feats(0))
    rv.add_score(score("rf", 0, bad))
    rv.add_score(score("gbm", 0, 0.2))
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by, p.missed) == ("gbm", "fallback", ["rf"])
    assert rv.counters["rejected_non_finite"] == 1 and rv.book.card("rf", SYM).rejected == 1


def test_unknown_model_and_wrong_feature_version_are_rejected(clock: SimulatedClock,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    rv = make(clock, roles=Roles(champion="rf"))
    rv.open_round(feats(0))
    with caplog.at_level(logging.WARNING, logger="dope.rendezvous"):
        rv.add_score(score("intruder", 0, 0.5))
        rv.add_score(score("rf", 0, 0.5, version="v2"))
    assert rv.counters["rejected_unknown_model"] == 1 and rv.counters["rejected_feature_version"] == 1
    assert "intruder" in caplog.text and "feature_version" in caplog.text
    assert ("intruder", SYM) not in rv.book.cards  # no card for a stranger
    clock.advance_to(clock.now_ms() + 50)
    [p] = rv.due(clock.now_ms())
    assert p.chosen_by == "none" and p.missed == ["rf"]


def test_score_before_its_features_waits_for_the_round(clock: SimulatedClock) -> None:
    rv = make(clock, roles=Roles(champion="rf"))
    rv.add_score(score("rf", 0, 0.4))  # overtook the features on another socket
    assert rv.due(clock.now_ms()) == [] and rv.counters["early"] == 1
    rv.open_round(feats(0))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.prediction, p.chosen_by) == ("rf", 0.4, "champion")


def test_features_of_a_bar_already_decided_do_not_open_a_second_round(clock: SimulatedClock) -> None:
    rv = make(clock, roles=Roles(champion="rf"))
    rv.open_round(feats(IV))
    rv.add_score(score("rf", IV, 0.1))
    assert len(rv.due(clock.now_ms())) == 1
    rv.open_round(feats(IV))
    rv.open_round(feats(0))
    assert rv.counters["rejected_stale_features"] == 2 and rv.open_rounds() == 0


def test_rounds_of_several_symbols_are_independent(clock: SimulatedClock) -> None:
    rv = make(clock, roles=Roles(champion="rf", challengers=("gbm",)))
    rv.open_round(feats(0, "BTCUSDT"))
    rv.open_round(feats(0, "ETHUSDT"))
    rv.add_score(score("rf", 0, 0.1, symbol="ETHUSDT"))
    rv.add_score(score("gbm", 0, 0.2, symbol="ETHUSDT"))
    [eth] = rv.due(clock.now_ms())
    assert (eth.symbol, eth.model_id) == ("ETHUSDT", "rf")
    clock.advance_to(clock.now_ms() + 50)
    [btc] = rv.due(clock.now_ms())
    assert (btc.symbol, btc.chosen_by) == ("BTCUSDT", "none")


def test_canary_divergence_is_tracked_and_raises_a_warning(clock: SimulatedClock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    rv = make(clock, roles=Roles(champion="rf", canaries=("zero",)), canary_min_rounds=5,
              canary_max_divergence=0.01, canary_window=10)
    with caplog.at_level(logging.WARNING, logger="dope.rendezvous"):
        for i in range(20):
            t = i * IV
            rv.open_round(feats(t))
            gap = 0.001 if i < 10 else 0.05  # the champion drifts away from the canary at round 10
            rv.add_score(score("rf", t, 0.001 * i + gap))
            rv.add_score(score("zero", t, 0.001 * i))
            rv.due(clock.now_ms())
            if i == 9:
                assert rv.book.card("zero", SYM).alarm is False and "diverges" not in caplog.text
    card = rv.scorecards()[1]
    assert card.model_id == "zero" and card.role == "canary" and card.divergence_alarm is True
    assert card.divergence == pytest.approx(0.05)
    assert caplog.text.count("diverges") == 1 and rv.counters["canary_alarms"] == 1


def test_roles_watcher_reloads_when_the_registry_roles_change(tmp_path: Path) -> None:
    watcher = RolesWatcher(tmp_path, order=("b", "a"))
    assert watcher.poll() is None  # no roles file yet
    write_roles(tmp_path, {"rf": "champion", "a": "challenger", "b": "challenger", "old": "retired"})
    roles = watcher.poll()
    assert roles == Roles(champion="rf", challengers=("b", "a"))
    assert watcher.poll() is None  # unchanged
    write_roles(tmp_path, {"a": "champion", "rf": "challenger"})
    assert watcher.poll() == Roles(champion="a", challengers=("rf",))
    (tmp_path / "roles.json").write_text("{broken", encoding="utf-8")
    assert watcher.poll() is None  # logged; the current roles stay


def write_roles(root: Path, roles: dict[str, str]) -> None:
    path = root / "roles.json"
    revision = json.loads(path.read_text())["revision"] + 1 if path.exists() else 1
    path.write_text(json.dumps({"revision": revision, "updated_ms": 0, "roles": roles, "pad": "x" * revision}))


def test_only_deployed_models_are_waited_for() -> None:
    roles = Roles(champion="rf", challengers=("gbm", "ridge"), shadows=("lstm",), canaries=("zero",))
    assert deployed_roles(roles, []) == roles
    assert deployed_roles(roles, ["role:champion", "ridge", "role:canary"]) == Roles(
        champion="rf", challengers=("ridge",), canaries=("zero",))


# ---- event deadlines (replays): wait for every model, never for the wall clock ----------------------

def abstain(model: str, t: int, why: str = "warmup") -> Score:
    return Score(symbol=SYM, event_time=t + IV - 1, open_time=t, model_id=model, model_kind="k",
                 feature_version="v1", prediction=math.nan, latency_us=0, abstained=why)


TWO = Roles(champion="rf", challengers=("lstm",))


def test_event_deadlines_wait_for_a_slow_model_far_past_the_deadline(clock: SimulatedClock) -> None:
    rv = Rendezvous(RendezvousConfig(deadline_ms=50, liveness_ms=10_000), TWO, clock, rule=RULE, event_deadlines=True)
    rv.open_round(feats(0))
    rv.add_score(score("lstm", 0, 0.002))
    clock.advance_to(clock.now_ms() + 9_000)  # far past deadline_ms: a replay that outran the champion
    assert rv.due(clock.now_ms()) == []
    rv.add_score(score("rf", 0, 0.001))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by, p.missed) == ("rf", "champion", [])
    assert rv.counters["late"] == 0


def test_an_abstention_is_neither_waited_for_nor_a_miss(clock: SimulatedClock) -> None:
    for event in (False, True):
        rv = Rendezvous(RendezvousConfig(deadline_ms=50), TWO, clock, rule=RULE, event_deadlines=event)
        rv.open_round(feats(0))
        rv.add_score(abstain("rf", 0))
        rv.add_score(score("lstm", 0, 0.002))
        [p] = rv.due(clock.now_ms())  # at once, not after the deadline
        assert (p.model_id, p.chosen_by, p.answered, p.missed) == ("lstm", "fallback", ["lstm"], [])
        assert rv.counters["abstained"] == 1 and rv.counters.get("rejected_non_finite", 0) == 0
        assert rv.book.card("rf", SYM).misses == 0


def test_a_model_that_answered_a_later_bar_is_not_waited_for(clock: SimulatedClock) -> None:
    rv = Rendezvous(RendezvousConfig(liveness_ms=10_000), TWO, clock, rule=RULE, event_deadlines=True)
    rv.open_round(feats(0))
    rv.open_round(feats(IV))
    rv.add_score(score("lstm", 0, 0.002))
    rv.add_score(score("lstm", IV, 0.003))
    rv.add_score(score("rf", IV, 0.004))  # rf skipped bar 0 (models answer in order): bar 0 closes now
    got = rv.due(clock.now_ms())
    assert [(p.open_time, p.model_id, p.missed) for p in got] == [(IV, "rf", []), (0, "lstm", ["rf"])]


def test_a_dead_model_is_given_up_after_the_liveness_timeout_then_not_waited_for(
        clock: SimulatedClock, caplog: pytest.LogCaptureFixture) -> None:
    rv = Rendezvous(RendezvousConfig(liveness_ms=10_000), TWO, clock, rule=RULE, event_deadlines=True)
    rv.open_round(feats(0))
    rv.add_score(score("lstm", 0, 0.002))
    clock.advance_to(clock.now_ms() + 9_999)
    assert rv.due(clock.now_ms()) == []
    clock.advance_to(clock.now_ms() + 1)
    with caplog.at_level(logging.WARNING):
        [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.missed) == ("lstm", ["rf"]) and rv.counters["liveness_timeouts"] == 1
    assert "no answer from model rf" in caplog.text
    rv.open_round(feats(IV))  # rf is down: the next round does not wait for it
    rv.add_score(score("lstm", IV, 0.003))
    [p] = rv.due(clock.now_ms())
    assert (p.open_time, p.missed) == (IV, ["rf"])
    rv.add_score(score("rf", 2 * IV, 0.001))  # early, for a round not open yet: rf is back
    rv.open_round(feats(2 * IV))
    rv.add_score(score("lstm", 2 * IV, 0.003))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.chosen_by) == ("rf", "champion")


def test_an_unusable_score_settles_the_model_with_event_deadlines(clock: SimulatedClock) -> None:
    rv = Rendezvous(RendezvousConfig(liveness_ms=10_000), TWO, clock, rule=RULE, event_deadlines=True)
    rv.open_round(feats(0))
    rv.add_score(score("rf", 0, math.nan))
    rv.add_score(score("lstm", 0, 0.002))
    [p] = rv.due(clock.now_ms())
    assert (p.model_id, p.missed, rv.counters["rejected_non_finite"]) == ("lstm", ["rf"], 1)
