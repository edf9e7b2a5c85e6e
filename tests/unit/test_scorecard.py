"""Scorecard statistics against numpy/scipy on random data, realised returns without look-ahead, the shadow
accounts' P&L against the event backtest, persistence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
import scipy.stats

from dope.backtest import BacktestConfig, run_event
from dope.clock import SimulatedClock
from dope.config import RendezvousConfig, TraderConfig
from dope.messages import Bar
from dope.rendezvous import ModelCard, Outcomes, Rendezvous, Ring, Roles, ScorecardBook, spearman
from dope.rendezvous.scorecard import average_ranks, pearson
from dope.services.rendezvous import shadow_rule
from tests.unit.test_rendezvous_policy import IV, RULE, SYM, bar, feats, score


def test_ring_keeps_the_last_values_oldest_first() -> None:
    ring = Ring(4)
    assert ring.values().tolist() == [] and len(ring) == 0
    ring.extend([1, 2, 3])
    assert ring.values().tolist() == [1, 2, 3]
    ring.extend([4, 5, 6])
    assert ring.values().tolist() == [3, 4, 5, 6] and len(ring) == 4
    with pytest.raises(ValueError, match="size"):
        Ring(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_and_spearman_match_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=200), 1)  # many ties
    b = a * 0.3 + np.round(rng.normal(size=200), 1)
    assert np.array_equal(average_ranks(a), scipy.stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert spearman(a[:2], b[:2]) is None and pearson(np.ones(5), b[:5]) is None


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_card_statistics_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, window = 700, 250
    realised = rng.normal(0, 0.002, n)
    realised[::50] = 0.0  # flat bars happen
    pred = 0.3 * realised + rng.normal(0, 0.002, n)
    latency = rng.lognormal(6, 1, n).round()
    card = ModelCard("rf", SYM, initial_cash=1000.0, window=window, latency_window=300)
    for p, r, lat in zip(pred, realised, latency, strict=True):
        card.record_answer(int(lat), int(lat // 1000))
        card.record_outcome(float(p), float(r))
    snap = card.snapshot("champion", 0)
    err = pred - realised
    assert snap.rmse == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-12)
    assert snap.mae == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    moved = realised != 0
    assert snap.hit_rate == pytest.approx(np.mean(np.sign(pred[moved]) == np.sign(realised[moved])))
    assert snap.ic == pytest.approx(scipy.stats.spearmanr(pred[-window:], realised[-window:]).statistic, abs=1e-12)
    p50, p99 = np.percentile(latency[-300:], [50, 99])
    assert (snap.latency_p50_us, snap.latency_p99_us) == (pytest.approx(p50), pytest.approx(p99))
    assert snap.realised == n


def test_empty_card_has_undefined_statistics() -> None:
    snap = ModelCard("rf", SYM, initial_cash=1000.0).snapshot("", 0)
    assert (snap.rmse, snap.mae, snap.hit_rate, snap.ic, snap.latency_p50_us, snap.divergence) == (None,) * 6
    assert snap.pnl == 0.0 and snap.realised == 0


def test_outcomes_are_known_only_once_the_future_bar_exists() -> None:
    out = Outcomes(horizon_bars=2)
    assert out.add_bar(SYM, 0, IV, 100.0) == []
    assert out.add_prediction(SYM, 0, "rf", 0.01) == []
    assert out.add_bar(SYM, IV, IV, 105.0) == []  # one bar ahead is not the target yet
    [(model, t, pred, realised)] = out.add_bar(SYM, 2 * IV, IV, 110.0)
    assert (model, t, pred) == ("rf", 0, 0.01) and realised == pytest.approx(np.log(110 / 100))
    # a prediction arriving after its outcome is known meets it at once
    assert out.add_prediction(SYM, 0, "gbm", -0.01)[0][3] == pytest.approx(np.log(1.1))
    # a prediction whose starting bar is missing can never be realised: dropped and counted
    out.add_prediction(SYM, 5 * IV, "rf", 0.0)
    for t in (7, 8, 9):
        out.add_bar(SYM, t * IV, IV, 100.0)
    assert out.unrealisable == 1 and out.pending_count() == 0


def test_rendezvous_scores_models_against_realised_returns_without_look_ahead() -> None:
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(deadline_ms=50, horizon_bars=1), Roles(champion="rf", challengers=("zero",)),
                    clock, rule=RULE)
    closes = [100.0, 101.0, 100.0, 102.0, 102.0]
    preds = [0.01, 0.02, 0.03, -0.01]
    for i, close in enumerate(closes):
        rv.add_bar(bar(i * IV, close))
        if i < len(preds):
            rv.open_round(feats(i * IV))
            rv.add_score(score("rf", i * IV, preds[i]))
            rv.add_score(score("zero", i * IV, 0.0))
            assert len(rv.due(clock.now_ms())) == 1
            assert rv.book.card("rf", SYM).realised == i  # bar i's outcome needs bar i+1
    card = rv.book.card("rf", SYM).snapshot("champion", 0)
    realised = np.diff(np.log(closes))
    assert card.realised == 4 and card.hit_rate == pytest.approx(2 / 3)  # the last bar did not move
    assert card.rmse == pytest.approx(np.sqrt(np.mean((np.array(preds) - realised) ** 2)))


def test_persistence_round_trip_resumes_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    data = rng.normal(0, 0.01, (400, 3))
    whole, first = (ScorecardBook(rule=RULE, window=50, latency_window=64) for _ in range(2))
    for book, rows in ((whole, data), (first, data[:250])):
        feed(book, rows)
    path = tmp_path / "scorecards" / "rendezvous.json"
    first.save(path, {"rf": "champion"})
    resumed = ScorecardBook(rule=RULE, window=50, latency_window=64)
    assert resumed.load(path) == 2 and resumed.saved_roles == {"rf": "champion"}
    assert resumed.snapshots({}, 7) == first.snapshots({}, 7)
    assert first.card("rf", SYM).shadow.order != 2  # saved with an order waiting for the next open
    feed(resumed, data[250:], start=250)
    assert resumed.snapshots({}, 7) == whole.snapshots({}, 7)
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporary file


def feed(book: ScorecardBook, rows: np.ndarray, start: int = 0) -> None:
    for i, (p, r, c) in enumerate(rows, start):
        card = book.card("rf", SYM)
        card.rounds += 1
        card.record_answer(i % 17, i % 5)
        card.record_outcome(float(p), float(r))
        book.add_bar(SYM, i * IV, IV, 100.0 + i % 7, 100.0 + i % 5)
        book.trade("rf", SYM, i * IV, 1.0 if i % 2 else -1.0)  # an order every bar, for the next open
        canary = book.card("zero", SYM)
        canary.record_pair(float(p), float(c))
        canary.misses += i % 3 == 0


def test_a_corrupt_scorecard_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "rendezvous.json"
    path.write_text(json.dumps({"format": "something else"}))
    book = ScorecardBook()
    assert book.load(path) == 0 and book.cards == {}
    assert (tmp_path / "rendezvous.json.corrupt").exists() and not path.exists()
    assert ScorecardBook().load(tmp_path / "absent.json") == 0


def test_scorecards_command_prints_the_saved_cards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dope.cli import main

    book = ScorecardBook(rule=RULE)
    feed(book, np.random.default_rng(1).normal(0, 0.01, (30, 3)))
    book.save(tmp_path / "store" / "scorecards" / "rendezvous.json", {"rf": "champion", "zero": "canary"})
    config = tmp_path / "dope.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store"}"\n', encoding="utf-8")
    assert main(["models", "scorecards", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model_id", "symbol", "role", "rounds"] and len(lines) == 3
    assert lines[1].split()[:4] == ["rf", SYM, "champion", "30"] and lines[2].split()[:3] == ["zero", SYM, "canary"]
    assert main(["models", "scorecards", "zero", "--json", "--config", str(config)]) == 0
    [card] = json.loads(capsys.readouterr().out)
    assert card["model_id"] == "zero" and card["misses"] == 10 and card["role"] == "canary"
    assert main(["models", "scorecards", "--symbol", SYM, "--json", "--config", str(config)]) == 0
    assert sorted(c["model_id"] for c in json.loads(capsys.readouterr().out)) == ["rf", "zero"]
    assert main(["models", "scorecards", "--symbol", "NOPEUSDT", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    (tmp_path / "store" / "scorecards" / "rendezvous.json").unlink()
    assert main(["models", "scorecards", "--config", str(config)]) == 0
    assert "no scorecards" in capsys.readouterr().out


def market(rng: np.random.Generator, n: int) -> list[Bar]:
    """``n`` bars whose opens gap away from the previous close (so a fill at the open is not one at the close)."""
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    opens = np.r_[100.0, closes[:-1]] * np.exp(rng.normal(0, 0.002, n))
    return [msgspec.structs.replace(bar(i * IV, float(c)), open=float(o)) for i, (o, c) in enumerate(zip(opens, closes,
                                                                                                         strict=True))]


def run_rendezvous(bars: list[Bar], preds: list[float], trader: TraderConfig, *, lag: int) -> Rendezvous:
    """The predictions as the model ``rf``'s scores (NaN: it abstains), each bar arriving ``lag`` rounds
    after its round (negative: before it)."""
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), Roles(champion="rf"), clock, rule=shadow_rule(trader))
    events = sorted([(i + lag, 0, i) for i in range(len(bars))] + [(i, 1, i) for i in range(len(bars))])
    for _, is_round, i in events:
        if not is_round:
            rv.add_bar(bars[i])
            continue
        answer = score("rf", i * IV, 0.0)
        rv.open_round(feats(i * IV))
        rv.add_score(msgspec.structs.replace(answer, prediction=preds[i]) if math.isfinite(preds[i])
                     else msgspec.structs.replace(answer, abstained=True))
        rv.due(clock.now_ms())
    return rv


@pytest.mark.parametrize(("seed", "allow_short", "lag"), [(11, False, 0), (12, True, 0), (13, True, 3), (14, False, -5)])
def test_scorecard_pnl_is_the_event_backtest_of_the_models_predictions(seed: int, allow_short: bool, lag: int) -> None:
    """The trader's rule, thresholds, fees, slippage and sizing: the shadow account ends where the event
    backtest of the same predictions and bars does, whether the bars come before or after the scores."""
    rng = np.random.default_rng(seed)
    n = 300
    bars = market(rng, n)
    preds = rng.normal(0, 0.001, n)
    preds[rng.random(n) < 0.1] = np.nan  # the model abstains now and then: the position holds
    trader = TraderConfig(upper=0.0005, lower=-0.0007, allow_short=allow_short, fee_rate=0.00075, slippage_bps=2.5,
                          fraction=0.8, initial_cash=5_000.0)
    backtest = BacktestConfig(upper=0.0005, lower=-0.0007, allow_short=allow_short, fee_rate=0.00075,
                              slippage_bps=2.5, fraction=0.8, initial_cash=5_000.0)
    frame = {"open_time": [b.open_time for b in bars], "open": [b.open for b in bars],
             "close": [b.close for b in bars]}
    expected = run_event(frame, preds, backtest, interval_ms=IV)
    card = run_rendezvous(bars, preds.tolist(), trader, lag=lag).book.card("rf", SYM)
    assert card.pnl == pytest.approx(float(expected.equity[-1]) - 5_000.0, rel=1e-12, abs=1e-12)
    assert card.snapshot("champion", 0).trades > 10 and card.shadow.stale == 0


def test_scorecard_fills_at_the_next_open_not_close_to_close() -> None:
    """Long from the close of bar 0: bought at bar 1's open (110, a gap up), not at bar 0's close (100)."""
    trader = TraderConfig(upper=0.001, lower=-0.001, fee_rate=0.0, initial_cash=10_000.0)
    bars = [msgspec.structs.replace(bar(i * IV, c), open=o) for i, (o, c) in enumerate([(100.0, 100.0), (110.0, 110.0),
                                                                                         (120.0, 121.0)])]
    rv = run_rendezvous(bars, [0.01, 0.01, 0.01], trader, lag=0)
    card = rv.book.card("rf", SYM)
    assert card.pnl == pytest.approx(10_000.0 / 110.0 * (121.0 - 110.0), rel=1e-12)  # close-to-close: 2100
    assert card.shadow.position.qty == pytest.approx(10_000.0 / 110.0) and card.shadow.trades == 1


def test_scorecard_waits_for_the_open_its_order_fills_at() -> None:
    """The score of bar 0 arrives before bar 1: the order waits; a round closed out of order is stale."""
    book = ScorecardBook(rule=shadow_rule(TraderConfig(upper=0.001, lower=-0.001, fee_rate=0.0)))
    book.add_bar(SYM, 0, IV, 100.0, 100.0)
    book.trade("rf", SYM, 0, 0.01)
    shadow = book.card("rf", SYM).shadow
    assert shadow.position.direction == 0 and shadow.pnl == 0.0
    book.trade("rf", SYM, 0, -0.01)  # a second decision for a bar already decided: not traded
    assert shadow.stale == 1
    book.add_bar(SYM, IV, IV, 125.0, 150.0)
    assert shadow.position.direction == 1 and shadow.pnl == pytest.approx(10_000.0 / 125.0 * 25.0)
    with pytest.raises(ValueError, match="no trading rule"):
        ScorecardBook().add_bar(SYM, 0, IV, 1.0, 1.0)


def test_a_round_closing_after_a_newer_one_is_too_late_to_trade() -> None:
    """Wall deadlines: bar 1's round completes while bar 0's still waits for ``gbm``; bar 0's round then closes
    after bar 1's, and its shadow trade is counted stale instead of trading out of order (its prediction left
    as soon as the champion answered)."""
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), Roles(champion="rf", challengers=("gbm",)), clock, rule=RULE)
    rv.add_bar(bar(0, 100.0))
    rv.open_round(feats(0))
    rv.add_score(score("rf", 0, -0.01))
    rv.add_bar(bar(IV, 100.0))
    rv.open_round(feats(IV))
    rv.add_score(score("rf", IV, 0.01))
    rv.add_score(score("gbm", IV, 0.01))
    assert [p.open_time for p in rv.due(clock.now_ms())] == [0, IV]  # both settled: rf answered
    assert rv.open_rounds() == 1 and rv.book.card("rf", SYM).shadow.stale == 0  # bar 0's still waits for gbm
    clock.advance_to(50)
    assert rv.due(clock.now_ms()) == [] and rv.open_rounds() == 0
    shadow = rv.book.card("rf", SYM).shadow
    assert shadow.stale == 1 and list(shadow.queue) == [] and shadow.order == 1  # long from bar 1, waiting
