"""The trainer's ledger: the same series whatever order bars and scores arrive in, the rendezvous' numbers."""

from __future__ import annotations

import math

import numpy as np

from dope.loop.ledger import Ledger
from dope.rendezvous import Outcomes, ShadowAccount, ShadowRule
from dope.rendezvous.shadow import BarTape
from dope.trading.rule import Costs, Thresholds

IV = 10_000
RULE = ShadowRule(Thresholds(0.0002, -0.0002, True), Costs(0.001, 0.0001, 1.0), 10_000.0)


def inputs(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    return closes, {"a": rng.normal(0, 0.001, n), "b": rng.normal(0, 0.001, n)}


def feed(ledger: Ledger, closes: np.ndarray, preds: dict[str, np.ndarray], order: list[tuple[str, int]]) -> None:
    for what, t in order:
        if what == "bar":
            ledger.add_bar("BTCUSDT", t * IV, IV, float(closes[t - 1] if t else closes[0]), float(closes[t]))
        else:
            ledger.add_score("BTCUSDT", t * IV, what, float(preds[what][t]))


def test_the_series_do_not_depend_on_the_arrival_order() -> None:
    closes, preds = inputs(120, 1)
    events = [(kind, t) for t in range(120) for kind in ("bar", "a", "b")]
    rng = np.random.default_rng(2)
    shuffled = sorted(events, key=lambda e: e[1] + rng.integers(0, 8))  # scores and bars up to 8 bars apart
    ledgers = [Ledger("BTCUSDT", IV, horizon=1, rule=RULE) for _ in range(2)]
    for ledger, order in zip(ledgers, (events, shuffled), strict=True):
        feed(ledger, closes, preds, order)
        ledger.settle(121 * IV)
    first, second = (ledger.paired("a", "b", 0, 200 * IV) for ledger in ledgers)
    assert first.open_times == second.open_times and first.n == 119
    for name in ("errors_a", "errors_b", "pnl_a", "pnl_b"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name


def test_errors_and_pnl_are_the_rendezvous_outcomes_and_shadow_account() -> None:
    closes, preds = inputs(60, 3)
    ledger = Ledger("BTCUSDT", IV, horizon=1, rule=RULE)
    feed(ledger, closes, preds, [(kind, t) for t in range(60) for kind in ("bar", "a")])
    ledger.add_score("BTCUSDT", 5 * IV, "a", 1.0)  # a second answer for a bar is ignored
    ledger.settle(60 * IV)
    outcomes, tape, account = Outcomes(1), BarTape(), ShadowAccount(RULE.initial_cash)
    errors, pnl, marked = {}, {}, 0.0
    for t in range(60):
        tape.add(t * IV, IV, float(closes[t - 1] if t else closes[0]), float(closes[t]))
        for _, when, p, r in outcomes.add_bar("BTCUSDT", t * IV, IV, float(closes[t])):
            errors[when] = p - r
        account.advance(tape, RULE)
        if t:
            pnl[(t - 1) * IV], marked = account.pnl - marked, account.pnl
        account.decide_at(t * IV, float(preds["a"][t]))
        account.advance(tape, RULE)
        for _, when, p, r in outcomes.add_prediction("BTCUSDT", t * IV, "a", float(preds["a"][t])):
            errors[when] = p - r
    assert ledger.errors["a"] == errors and ledger.pnl["a"].keys() == pnl.keys()
    assert all(math.isclose(ledger.pnl["a"][k], v, abs_tol=1e-9) for k, v in pnl.items())
    assert ledger.late == 0 and ledger.errors["a"][5 * IV] != 1.0 - math.log(closes[6] / closes[5])


def test_inputs_for_settled_bars_are_counted_and_dropped() -> None:
    ledger = Ledger("BTCUSDT", IV, horizon=1, rule=RULE)
    ledger.settle(10 * IV)
    ledger.add_score("BTCUSDT", 3 * IV, "a", 0.1)
    ledger.add_bar("BTCUSDT", 4 * IV, IV, 1.0, 1.0)
    ledger.add_score("ETHUSDT", 3 * IV, "a", 0.1)  # another symbol: not the ledger's
    assert ledger.late == 2 and ledger.scored == {"a": 3 * IV}
    assert ledger.ready(4 * IV, []) is False and ledger.ready(4 * IV, ["a"]) is False
