"""The rendezvous core: rounds of scores under a deadline, the choice policy, and the scorecards.

Pure and clock-driven (no sockets, no wall clock): the service feeds it messages and calls
``due`` with its clock's time; tests drive it with a ``SimulatedClock``.

A *round* is one feature vector, keyed by ``(symbol, open_time)``. It opens when the
features are published (``open_round``) and waits for every model that has a role. It closes,
in ``due(now_ms)``, as soon as all of them answered or the deadline (``deadline_ms`` after it
opened) passed. The prediction is the champion's score if it came in time, else the first
challenger's (configured order) in time, else a canary's if ``canary_fallback``, else an
explicit "no prediction" (``prediction=None``, ``chosen_by="none"``). Shadows score but are
never chosen. A model that *abstains* (warm-up, bad input) is not waited for and not missed.

With wall-clock deadlines (live) the prediction does not wait for scores that cannot change it:
it leaves as soon as the first model of the priority order that can still answer has answered
(the champion's score is in: at once). The round stays open for the scorecards until it is
complete or its deadline passes; the prediction lists the models still awaited in ``pending``.
Nothing a shadow, a canary or a lower challenger does then delays the trade.

With ``event_deadlines`` (replays) no wall-clock deadline decides: a round waits until every
expected model answered, abstained, or answered a later bar of the symbol (it skipped this one:
models answer in order). Only a model silent for ``liveness_ms`` is given up on; it is then
*down* (counted ``liveness_timeouts``, logged) and not waited for until it answers again.

>>> from dope.clock import SimulatedClock
>>> from dope.messages import Features, Score
>>> clock = SimulatedClock(0)
>>> from dope.trading.rule import Costs, Thresholds
>>> rule = ShadowRule(Thresholds(0.0005, -0.0005, False), Costs(0.001, 0.0, 1.0), initial_cash=10_000.0)
>>> rv = Rendezvous(RendezvousConfig(deadline_ms=50), Roles(champion="rf", challengers=("zero",)), clock,
...                 rule=rule)
>>> rv.open_round(Features(symbol="X", event_time=9, open_time=0, feature_set="f", feature_version="1",
...                        values=[1.0]))
>>> rv.add_score(Score(symbol="X", event_time=9, open_time=0, model_id="zero", model_kind="zero",
...                    feature_version="1", prediction=0.0, latency_us=5))
>>> clock.advance_to(50); [(p.model_id, p.chosen_by, p.missed) for p in rv.due(clock.now_ms())]
[('zero', 'fallback', ['rf'])]
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from dope.clock import Clock
from dope.messages import Bar, Features, Prediction, Score, Scorecard
from dope.rendezvous.config import RendezvousConfig
from dope.rendezvous.outcomes import Outcome, Outcomes
from dope.rendezvous.roles import Roles
from dope.rendezvous.scorecard import ScorecardBook
from dope.rendezvous.shadow import ShadowRule

log = logging.getLogger("dope.rendezvous")

RECENT_CLOSED = 4096
MAX_EARLY = 4096
Key = tuple[str, int]


@dataclass
class _Answer:
    prediction: float
    latency_us: int
    arrival_ms: int


@dataclass
class Round:
    """One feature vector waiting for its scores."""

    symbol: str
    open_time: int
    event_time: int
    feature_version: str
    opened_ms: int
    deadline_at: int
    roles: Roles
    expected: frozenset[str]
    answers: dict[str, _Answer] = field(default_factory=dict)
    late: set[str] = field(default_factory=set)
    abstained: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    decided: bool = False
    chosen: str = ""
    closed: bool = False

    @property
    def complete(self) -> bool:
        return len(self.answers) + len(self.abstained) + len(self.passed) == len(self.expected)

    def waiting_for(self) -> set[str]:
        """The expected models that neither answered, abstained nor were passed over."""
        return set(self.expected - self.answers.keys() - self.abstained - self.passed)

    def settled(self, priority: tuple[str, ...]) -> bool:
        """Whether no score still to come can change the choice: the first model of ``priority`` that
        has not abstained (or been passed over, or come late) has answered, or there is none."""
        for mid in priority:
            if mid in self.answers:
                return True
            if mid not in self.abstained and mid not in self.passed and mid not in self.late:
                return False
        return True


class Rendezvous:
    """Rounds, policy and scorecards. Feed it features, scores and bars; collect predictions from ``due``.

    ``rule`` is the trader's rule every model's shadow account trades by (the scorecards' P&L)."""

    def __init__(self, config: RendezvousConfig, roles: Roles, clock: Clock, *, rule: ShadowRule,
                 event_deadlines: bool = False) -> None:
        self.config = config
        self.event_deadlines = event_deadlines
        self.roles = roles
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.book = ScorecardBook(rule=rule, window=config.window, latency_window=config.latency_window,
                                  divergence_window=config.canary_window)
        self.outcomes = Outcomes(config.horizon_bars)
        self.last_event_time = 0
        self._open: dict[Key, Round] = {}
        self._queue: deque[Round] = deque()
        self._ready: list[Round] = []
        self._settled: list[Round] = []
        self._closed: OrderedDict[Key, frozenset[str]] = OrderedDict()
        self._newest_closed: dict[str, int] = {}
        self._early: OrderedDict[Key, list[tuple[Score, int]]] = OrderedDict()
        self._latest: dict[tuple[str, str], int] = {}  # (symbol, model) -> newest open time it answered
        self._down: set[str] = set()

    # ---- roles -----------------------------------------------------------------------------------
    def set_roles(self, roles: Roles) -> None:
        """New roles, in force from the next round opened (open rounds keep theirs)."""
        if roles != self.roles:
            log.info("rendezvous: roles now %s", roles.as_mapping())
            self.counters["role_changes"] += 1
        self.roles = roles

    # ---- rounds ----------------------------------------------------------------------------------
    def open_round(self, features: Features) -> None:
        """Start the round of a published feature vector; its deadline starts now."""
        key = (features.symbol, features.open_time)
        if key in self._open or key in self._closed or features.open_time <= self._newest_closed.get(key[0], -1):
            self._reject("stale_features", f"{features.symbol}: features of bar {features.open_time} "
                                           "already had a round")
            return
        now = self.clock.now_ms()
        wait = self.config.liveness_ms if self.event_deadlines else self.config.deadline_ms
        rnd = Round(features.symbol, features.open_time, features.event_time, features.feature_version, now,
                    now + wait, self.roles, self.roles.expected)
        self._open[key] = rnd
        self._queue.append(rnd)
        self.last_event_time = max(self.last_event_time, features.event_time)
        self.counters["rounds_opened"] += 1
        for score, arrival in self._early.pop(key, []):
            self._answer(rnd, score, arrival)
        if self.event_deadlines:
            self._pass_over(rnd)
        self._note_answered(rnd)

    def add_score(self, score: Score) -> None:
        """A model's score: recorded in its round, or counted as late, early or rejected."""
        self.counters["scores"] += 1
        now = self.clock.now_ms()
        key = (score.symbol, score.open_time)
        if self.event_deadlines:
            self._note_progress(score)
        rnd = self._open.get(key)
        if rnd is not None:
            if self._answer(rnd, score, now):
                self._note_answered(rnd)
        elif key in self._closed or score.open_time <= self._newest_closed.get(score.symbol, -1):
            self._late(score, now)
        else:
            self._keep_early(key, score, now)

    def _note_answered(self, rnd: Round) -> None:
        """After an answer: the round is ready to close when complete; live, ready to decide when settled."""
        if rnd.complete:
            self._ready.append(rnd)
        elif not self.event_deadlines and not rnd.decided and rnd.settled(self._priority(rnd)):
            self._settled.append(rnd)

    def _priority(self, rnd: Round) -> tuple[str, ...]:
        return rnd.roles.priority(self.config.canary_fallback)

    def _answer(self, rnd: Round, score: Score, arrival_ms: int) -> bool:
        """Accept ``score`` into the open ``rnd`` if valid; True if accepted."""
        problem = self._problem(score, rnd.expected, rnd.feature_version)
        mid = score.model_id
        if problem is None and (mid in rnd.answers or mid in rnd.late or mid in rnd.abstained):
            problem = "duplicate"
        if problem is None and not self.event_deadlines and arrival_ms > rnd.deadline_at:
            problem = "after_deadline"
        if problem is not None:
            return self._refuse(score, problem, arrival_ms)
        rnd.passed.discard(mid)
        if score.abstained:
            self.counters["abstained"] += 1
            rnd.abstained.add(mid)
        else:
            rnd.answers[mid] = _Answer(score.prediction, score.latency_us, max(arrival_ms - rnd.opened_ms, 0))
        return True

    def _refuse(self, score: Score, problem: str, arrival_ms: int) -> bool:
        if problem == "after_deadline":  # a miss, recorded when the round closes; the score itself is late
            rnd = self._open[(score.symbol, score.open_time)]
            rnd.late.add(score.model_id)
            self._record_late_score(score, arrival_ms, rnd.opened_ms)
            return False
        self._reject(problem, f"{score.symbol}: score of {score.model_id!r} for bar {score.open_time} "
                              f"rejected: {problem}")
        if problem in ("non_finite", "feature_version", "duplicate"):
            self.book.card(score.model_id, score.symbol).rejected += 1
        rnd = self._open[(score.symbol, score.open_time)]
        if self.event_deadlines and problem in ("non_finite", "feature_version"):
            rnd.passed.add(score.model_id)  # it answered, unusably: nothing more will come
            return True
        return False

    def _problem(self, score: Score, expected: frozenset[str], feature_version: str) -> str | None:
        if score.model_id not in expected:
            return "unknown_model"
        if score.abstained:
            return None
        if not math.isfinite(score.prediction):
            return "non_finite"
        if score.feature_version != feature_version:
            return "feature_version"
        return None

    def _late(self, score: Score, now: int) -> None:
        if score.abstained:
            self.counters["abstained_late"] += 1
            return
        missed = self._closed.get((score.symbol, score.open_time))
        if missed is None or score.model_id not in missed:
            problem = ("unknown_model" if score.model_id not in self.roles.expected
                       else "duplicate" if missed is not None else "stale")
            self._reject(problem, f"{score.symbol}: score of {score.model_id!r} for closed bar "
                                  f"{score.open_time} dropped: {problem}")
            return
        if not math.isfinite(score.prediction):
            self._reject("non_finite", f"{score.symbol}: late score of {score.model_id!r} is not finite")
            self.book.card(score.model_id, score.symbol).rejected += 1
            return
        self._closed[(score.symbol, score.open_time)] = missed - {score.model_id}
        self._record_late_score(score, now, None)

    def _record_late_score(self, score: Score, now: int, opened_ms: int | None) -> None:
        self.counters["late"] += 1
        card = self.book.card(score.model_id, score.symbol)
        card.record_late(score.latency_us, 0 if opened_ms is None else max(now - opened_ms, 0))
        if math.isfinite(score.prediction):
            self._apply(self.outcomes.add_prediction(score.symbol, score.open_time, score.model_id,
                                                     score.prediction), score.symbol)

    # ---- event deadlines -------------------------------------------------------------------------
    def _note_progress(self, score: Score) -> None:
        """Remember the newest bar each model answered per symbol; a silent model that answers is back."""
        key = (score.symbol, score.model_id)
        if score.open_time > self._latest.get(key, -(2**62)):
            self._latest[key] = score.open_time
        if score.model_id in self._down:
            self._down.discard(score.model_id)
            log.info("rendezvous: model %s answers again", score.model_id)

    def _pass_over(self, rnd: Round) -> None:
        """Stop waiting for the models that are down or already answered a later bar of the symbol."""
        for mid in rnd.waiting_for():
            if mid in self._down or self._latest.get((rnd.symbol, mid), -(2**62)) > rnd.open_time:
                rnd.passed.add(mid)

    def _expire(self, rnd: Round) -> None:
        """A round waited ``liveness_ms``: the models still silent are down until they answer."""
        for mid in sorted(rnd.waiting_for()):
            self._down.add(mid)
            self.counters["liveness_timeouts"] += 1
            log.warning("rendezvous: %s: no answer from model %s for bar %d within %d ms: it is down, not "
                        "waited for until it answers again", rnd.symbol, mid, rnd.open_time,
                        self.config.liveness_ms)

    def _keep_early(self, key: Key, score: Score, now: int) -> None:
        """A score whose features have not arrived yet (another socket can overtake): hold it."""
        self.counters["early"] += 1
        self._early.setdefault(key, []).append((score, now))
        while len(self._early) > MAX_EARLY:
            (symbol, open_time), dropped = self._early.popitem(last=False)
            self._reject("orphan", f"{symbol}: {len(dropped)} score(s) for bar {open_time} never met "
                                   "their features", len(dropped))

    def _reject(self, kind: str, message: str, n: int = 1) -> None:
        self.counters[f"rejected_{kind}"] += n
        total = self.counters[f"rejected_{kind}"]
        if total <= 10 or total % 1000 == 0:
            log.warning("rendezvous: %s (rejected_%s #%d)", message, kind, total)

    # ---- closing ---------------------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        """When the oldest open round times out (None when none is open)."""
        while self._queue and self._queue[0].closed:
            self._queue.popleft()
        return self._queue[0].deadline_at if self._queue else None

    def due(self, now_ms: int) -> list[Prediction]:
        """Decide every settled round, close every round that is complete or past its deadline; return
        the predictions decided now (each round's exactly once)."""
        out = [self._decide(rnd) for rnd in self._settled if not rnd.decided]
        self._settled.clear()
        for rnd in self._ready:
            if not rnd.closed:
                out += self._close(rnd)
        self._ready.clear()
        while self._queue and (self._queue[0].closed or self._head_due(self._queue[0], now_ms)):
            rnd = self._queue.popleft()
            if not rnd.closed:
                out += self._close(rnd)
        return out

    def _head_due(self, rnd: Round, now_ms: int) -> bool:
        """Whether the oldest open round closes now: its deadline passed (or, with event deadlines,
        everyone it waits for is accounted for)."""
        if rnd.deadline_at <= now_ms:
            if self.event_deadlines:
                self._expire(rnd)
            return True
        if self.event_deadlines:
            self._pass_over(rnd)
            return rnd.complete
        return False

    def _close(self, rnd: Round) -> list[Prediction]:
        """Close ``rnd`` (its scorecards); its prediction too unless it was decided before."""
        decided = [] if rnd.decided else [self._decide(rnd, closing=True)]
        rnd.closed = True
        key = (rnd.symbol, rnd.open_time)
        del self._open[key]
        missed = rnd.expected - rnd.answers.keys() - rnd.abstained
        self._remember_closed(key, frozenset(missed - rnd.late))
        self._score_round(rnd, missed, rnd.chosen)
        return decided

    def _decide(self, rnd: Round, closing: bool = False) -> Prediction:
        """The round's prediction from its answers; before it closes, those still awaited are ``pending``."""
        pending = frozenset() if closing else rnd.waiting_for() - rnd.late
        missed = rnd.expected - rnd.answers.keys() - rnd.abstained - pending
        prediction = self._choose(rnd, frozenset(missed), frozenset(pending))
        rnd.decided, rnd.chosen = True, prediction.model_id
        return prediction

    def _remember_closed(self, key: Key, missed: frozenset[str]) -> None:
        self._closed[key] = missed
        if len(self._closed) > RECENT_CLOSED:
            self._closed.popitem(last=False)
        self._newest_closed[key[0]] = max(self._newest_closed.get(key[0], -1), key[1])

    def _choose(self, rnd: Round, missed: frozenset[str], pending: frozenset[str]) -> Prediction:
        priority = self._priority(rnd)
        chosen = next((mid for mid in priority if mid in rnd.answers), None)
        order = priority + tuple(m for m in rnd.roles.shadows if m not in priority)
        by = "none" if chosen is None else "champion" if chosen == rnd.roles.champion else "fallback"
        self.counters[f"chosen_{by}"] += 1
        return Prediction(
            symbol=rnd.symbol, event_time=rnd.event_time, open_time=rnd.open_time,
            prediction=None if chosen is None else rnd.answers[chosen].prediction, model_id=chosen or "",
            chosen_by=by, deadline_ms=self.config.deadline_ms,
            answered=[m for m in order if m in rnd.answers], missed=[m for m in order if m in missed],
            pending=[m for m in order if m in pending],
            latencies_us={m: rnd.answers[m].latency_us for m in order if m in rnd.answers},
            roles={m: rnd.roles.role_of(m) for m in order})

    def _score_round(self, rnd: Round, missed: frozenset[str], chosen: str) -> None:
        """Update the cards of every model of a closed round, and the canaries' divergence."""
        self.counters["rounds_closed"] += 1
        for mid in rnd.expected:
            card = self.book.card(mid, rnd.symbol)
            card.rounds += 1
            card.misses += mid in missed
            card.chosen += mid == chosen
        for mid, answer in rnd.answers.items():
            self.book.card(mid, rnd.symbol).record_answer(answer.latency_us, answer.arrival_ms)
            self.book.trade(mid, rnd.symbol, rnd.open_time, answer.prediction)
            self._apply(self.outcomes.add_prediction(rnd.symbol, rnd.open_time, mid, answer.prediction), rnd.symbol)
        self._watch_canaries(rnd)

    def _watch_canaries(self, rnd: Round) -> None:
        champion = rnd.answers.get(rnd.roles.champion or "")
        if champion is None:
            return
        for mid in rnd.roles.canaries:
            answer = rnd.answers.get(mid)
            if answer is not None:
                card = self.book.card(mid, rnd.symbol)
                card.record_pair(champion.prediction, answer.prediction)
                self._check_divergence(mid, rnd.symbol)

    def _check_divergence(self, model_id: str, symbol: str) -> None:
        card = self.book.card(model_id, symbol)
        if len(card.div_self) < self.config.canary_min_rounds:
            return
        divergence = card.mean_divergence()
        alarm = divergence is not None and divergence > self.config.canary_max_divergence
        if alarm and not card.alarm:
            self.counters["canary_alarms"] += 1
            corr = card.divergence()[1]
            log.warning("rendezvous: %s: canary %s diverges from the champion: mean |difference| %.6g > %.6g "
                        "over the last %d rounds (correlation %s)", symbol, model_id, divergence,
                        self.config.canary_max_divergence, len(card.div_self), corr)
        elif card.alarm and not alarm:
            log.info("rendezvous: %s: canary %s back within %.6g of the champion", symbol, model_id,
                     self.config.canary_max_divergence)
        card.alarm = alarm

    # ---- outcomes --------------------------------------------------------------------------------
    def add_bar(self, bar: Bar) -> None:
        """A bar: its close realises the forward returns of the bar ``horizon_bars`` back; the shadow
        accounts fill the orders waiting for its open."""
        self.counters["bars"] += 1
        self.book.add_bar(bar.symbol, bar.open_time, bar.interval_ms, bar.open, bar.close)
        self._apply(self.outcomes.add_bar(bar.symbol, bar.open_time, bar.interval_ms, bar.close), bar.symbol)

    def _apply(self, outcomes: list[Outcome], symbol: str) -> None:
        for model_id, _, prediction, realised in outcomes:
            self.book.card(model_id, symbol).record_outcome(prediction, realised)

    # ---- reporting -------------------------------------------------------------------------------
    def scorecards(self) -> list[Scorecard]:
        """Every model's card as a message (roles as they are now)."""
        return self.book.snapshots(self.roles.as_mapping(), self.last_event_time)

    def open_rounds(self) -> int:
        """How many rounds are waiting."""
        return len(self._open)
