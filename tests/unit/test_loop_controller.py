"""The loop's decisions through the real controller, ledger, registry and audit log (no sockets).

Scores and bars are constructed: a price path with known forward returns, a champion with some skill,
and candidates that are better, noise, the champion plus a small perturbation, or as good as the champion.
Every series goes through :class:`dope.loop.ledger.Ledger` (outcomes, shadow accounts) and every decision
through :meth:`Controller.checkpoint`, at the same checkpoints the service uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dope.cli import main as dope_main
from dope.errors import UserError
from dope.features import default_feature_set
from dope.loop.audit import AUDIT_FILE, AuditLog
from dope.loop.config import LoopConfig
from dope.loop.controller import Controller, approve, proposal_path
from dope.loop.ledger import Ledger
from dope.loop.schedule import checkpoint_bars
from dope.models import make_model
from dope.models.registry import Registry
from dope.rendezvous import ShadowRule
from dope.trading.rule import Costs, Thresholds

INTERVAL = 10_000
SYMBOL = "BTCUSDT"
RULE = ShadowRule(Thresholds(0.0005, -0.0005, False), Costs(0.0, 0.0, 1.0), 10_000.0)
LOOP = LoopConfig(enabled=True, kinds=("zero",), min_bars=200, max_candidate_bars=600, mode="auto")
Predictor = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def new_registry(root: Path, n: int) -> tuple[Registry, list[str]]:
    """``n`` registered (zero) models, the first the champion."""
    fs = default_feature_set(INTERVAL)
    registry = Registry(root)
    X, y = np.zeros((4, len(fs.names))), np.zeros(4)
    ids = [registry.register(make_model("zero").fit(X, y), feature_set=fs, symbol=SYMBOL, interval_ms=INTERVAL,
                             train_start_ms=0, train_end_ms=INTERVAL, extra={"n": i}) for i in range(n)]
    registry.promote(ids[0], "champion")
    return registry, ids


def market(n_bars: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Closes and the forward log returns (``forward[t] = log(close[t+1] / close[t])``) of an AR(1) path."""
    r = np.zeros(n_bars + 1)
    noise = rng.normal(0.0, 0.001, n_bars + 1)
    for t in range(1, n_bars + 1):
        r[t] = -0.3 * r[t - 1] + noise[t]
    closes = 100.0 * np.exp(np.cumsum(r))
    return closes, r[1:]


class Run:
    """A controller over a fresh registry, fed bar by bar with checkpoints on the service's grid."""

    def __init__(self, root: Path, loop: LoopConfig = LOOP, n_models: int = 3) -> None:
        self.registry, self.ids = new_registry(root, n_models)
        self.ledger = Ledger(SYMBOL, INTERVAL, horizon=1, rule=RULE)
        self.controller = Controller(loop, self.registry, self.ledger)
        self.step = checkpoint_bars(loop.min_bars)

    def feed(self, closes: np.ndarray, predictions: dict[str, np.ndarray], start: int, stop: int) -> None:
        """Bars ``start..stop-1`` and each model's prediction for them, with a checkpoint every ``step`` bars."""
        for t in range(start, stop):
            if t and t % self.step == 0:
                self.controller.checkpoint(t * INTERVAL)
            self.ledger.add_bar(SYMBOL, t * INTERVAL, INTERVAL, float(closes[t - 1] if t else closes[0]),
                                float(closes[t]))
            for model_id, values in predictions.items():
                self.ledger.add_score(SYMBOL, t * INTERVAL, model_id, float(values[t]))

    def actions(self) -> list[tuple[str, str]]:
        return [(e.action, e.model_id) for e in AuditLog(self.registry.root / AUDIT_FILE).read()]


def judge(root: Path, candidate: Predictor, seed: int, n_bars: int = 900, loop: LoopConfig = LOOP) -> Run:
    """Champion (some skill) against ``candidate`` from bar 100 on."""
    rng = np.random.default_rng(seed)
    closes, forward = market(n_bars, rng)
    champion = 0.3 * forward + rng.normal(0.0, 0.001, n_bars)
    run = Run(root, loop)
    champ, cand = run.ids[0], run.ids[1]
    run.feed(closes, {champ: champion}, 0, 100)
    run.controller.deployed(cand, 100 * INTERVAL, reason="test", evidence={})
    run.feed(closes, {champ: champion, cand: candidate(champion, rng)}, 100, n_bars)
    return run


def promoted(run: Run) -> bool:
    return any(action == "promote" for action, _ in run.actions())


@pytest.mark.parametrize("name", ["noise", "perturbed champion", "equal skill"])
def test_candidates_no_better_than_the_champion_are_rarely_promoted(tmp_path: Path, name: str) -> None:
    """False promotion rate over 25 seeds, through the controller (level 5%, up to 9 looks per candidate)."""
    def candidate(champion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if name == "noise":
            return rng.normal(0.0, float(np.std(champion)), champion.size)
        return champion + rng.normal(0.0, 0.1 * float(np.std(champion)), champion.size)

    seeds = range(25)
    if name == "equal skill":  # a second forecaster of the same quality: the null at its boundary
        rates = [_equal_skill(tmp_path / str(s), s) for s in seeds]
    else:
        rates = [promoted(judge(tmp_path / str(s), candidate, s)) for s in seeds]
    rate = sum(rates) / len(rates)
    assert rate <= LOOP.level, f"{name}: promoted in {sum(rates)} of {len(rates)} seeds"


def _equal_skill(root: Path, seed: int) -> bool:
    rng = np.random.default_rng(seed)
    closes, forward = market(900, rng)
    champion = 0.3 * forward + rng.normal(0.0, 0.001, 900)
    rival = 0.3 * forward + rng.normal(0.0, 0.001, 900)
    run = Run(root)
    run.feed(closes, {run.ids[0]: champion}, 0, 100)
    run.controller.deployed(run.ids[1], 100 * INTERVAL, reason="test", evidence={})
    run.feed(closes, {run.ids[0]: champion, run.ids[1]: rival}, 100, 900)
    return promoted(run)


def skilled(run_root: Path, seed: int, candidate_skill: float, loop: LoopConfig = LOOP) -> Run:
    rng = np.random.default_rng(seed)
    closes, forward = market(900, rng)
    champion = 0.2 * forward + rng.normal(0.0, 0.001, 900)
    candidate = candidate_skill * forward + rng.normal(0.0, 0.0005, 900)
    run = Run(run_root, loop)
    run.feed(closes, {run.ids[0]: champion}, 0, 100)
    run.controller.deployed(run.ids[1], 100 * INTERVAL, reason="test", evidence={})
    run.feed(closes, {run.ids[0]: champion, run.ids[1]: candidate}, 100, 900)
    return run


def test_a_better_candidate_is_promoted_and_audited_with_the_gate_evidence(tmp_path: Path) -> None:
    run = skilled(tmp_path, 0, 0.8)
    champ, cand = run.ids[0], run.ids[1]
    assert run.actions()[:3] == [("register", cand), ("shadow", cand), ("promote", cand)]
    assert run.registry.roles()[cand] == "champion" and run.registry.roles()[champ] == "challenger"
    entry = AuditLog(run.registry.root / AUDIT_FILE).read()[2]
    assert entry.time_ms % (run.step * INTERVAL) == 0 and entry.n_bars is not None and entry.n_bars >= 200
    assert entry.p_value is not None and entry.threshold is not None and entry.p_value <= entry.threshold
    assert entry.threshold == pytest.approx(LOOP.level / run.controller.looks)
    assert entry.evidence["previous"] == champ and entry.evidence["looks"] == run.controller.looks


def test_a_candidate_that_never_passes_is_rejected_at_max_candidate_bars(tmp_path: Path) -> None:
    run = judge(tmp_path, lambda champion, rng: rng.normal(0.0, 0.002, champion.size), 1)
    cand = run.ids[1]
    assert run.actions()[-1] == ("reject", cand)
    entry = AuditLog(run.registry.root / AUDIT_FILE).read()[-1]
    assert entry.n_bars is not None and entry.n_bars >= LOOP.max_candidate_bars
    assert run.registry.roles()[cand] == "retired" and run.controller.candidate is None


def test_a_promoted_model_that_degrades_live_is_rolled_back(tmp_path: Path) -> None:
    """Good until its promotion (at the checkpoint of bar 350), broken after: the previous champion wins the
    rollback test 200 paired bars later and is restored."""
    rng = np.random.default_rng(3)
    n = 1_400
    closes, forward = market(n, rng)
    old = 0.3 * forward + rng.normal(0.0, 0.001, n)
    new = 0.9 * forward + rng.normal(0.0, 0.0003, n)
    new[350:] = rng.normal(0.0, 0.003, n - 350)  # its live performance degrades
    run = Run(tmp_path)
    champ, cand = run.ids[0], run.ids[1]
    run.feed(closes, {champ: old}, 0, 100)
    run.controller.deployed(cand, 100 * INTERVAL, reason="test", evidence={})
    run.feed(closes, {champ: old, cand: new}, 100, n)
    actions = run.actions()
    promote = AuditLog(tmp_path / AUDIT_FILE).read()[2]
    assert promote.time_ms == 350 * INTERVAL
    assert [a for a, _ in actions] == ["register", "shadow", "promote", "rollback"]
    assert actions[-1] == ("rollback", champ)
    assert run.registry.roles()[champ] == "champion" and run.registry.roles()[cand] == "challenger"
    entry = AuditLog(run.registry.root / AUDIT_FILE).read()[-1]
    assert entry.evidence["demoted"] == cand and entry.p_value is not None and entry.p_value <= 0.05
    assert run.controller.watch is None


def test_without_degradation_the_new_champion_stays(tmp_path: Path) -> None:
    run = skilled(tmp_path, 4, 0.8)
    assert [a for a, _ in run.actions()] == ["register", "shadow", "promote"]
    assert run.controller.watch is None  # the rollback test ran (200 bars after the promotion) and failed


def test_propose_writes_a_proposal_that_dope_models_approve_applies(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    loop = LoopConfig(enabled=True, kinds=("zero",), min_bars=200, max_candidate_bars=600, mode="propose")
    run = skilled(tmp_path, 0, 0.8, loop)
    champ, cand = run.ids[0], run.ids[1]
    assert [a for a, _ in run.actions()] == ["register", "shadow"]  # nothing promoted by the trainer
    assert run.registry.roles()[cand] == "shadow" and proposal_path(run.registry, cand).exists()
    assert run.controller.candidate is not None and run.controller.candidate.judged
    assert dope_main(["models", "approve", cand, "--registry", str(tmp_path)]) == 0
    assert "is now champion" in capsys.readouterr().out
    assert run.registry.roles()[cand] == "champion" and run.registry.roles()[champ] == "challenger"
    entry = AuditLog(tmp_path / AUDIT_FILE).read()[-1]
    assert (entry.action, entry.model_id, entry.reason) == ("promote", cand, "passed")
    assert entry.evidence["previous"] == champ and entry.evidence["mode"] == "propose"
    run.controller.checkpoint(900 * INTERVAL)  # the trainer follows the approval: rollback watch
    assert run.controller.candidate is None and run.controller.watch is not None
    with pytest.raises(UserError, match="no proposal"):
        approve(run.registry, cand)


def test_off_only_audits_the_test(tmp_path: Path) -> None:
    loop = LoopConfig(enabled=True, kinds=("zero",), min_bars=200, max_candidate_bars=600, mode="off")
    run = skilled(tmp_path, 0, 0.8, loop)
    cand = run.ids[1]
    entries = AuditLog(tmp_path / AUDIT_FILE).read()
    assert [e.action for e in entries] == ["register", "shadow", "reject"]
    assert entries[-1].evidence["mode"] == "off" and entries[-1].evidence["gate"] == "passed"
    assert entries[-1].to_role == "shadow" and run.registry.roles()[cand] == "shadow"
    assert run.registry.champion() == run.ids[0]


def test_a_new_candidate_replaces_the_shadow_still_judged_and_recovery_finds_it(tmp_path: Path) -> None:
    run = Run(tmp_path, n_models=4)
    a, b = run.ids[1], run.ids[2]
    run.controller.deployed(a, 0, reason="test", evidence={})
    run.controller.deployed(b, 50 * INTERVAL, reason="test", evidence={})
    assert run.registry.roles()[a] == "retired" and run.registry.roles()[b] == "shadow"
    assert ("reject", a) in run.actions()
    again = Controller(LOOP, run.registry, Ledger(SYMBOL, INTERVAL, horizon=1, rule=RULE))
    again.recover()
    assert again.candidate is not None and (again.candidate.model_id, again.candidate.since_ms) == (b, 50 * INTERVAL)
    assert again.last_retrain_ms() == 50 * INTERVAL


def test_old_versions_beyond_keep_are_retired_never_the_live_ones(tmp_path: Path) -> None:
    loop = LoopConfig(enabled=True, kinds=("zero",), keep=2)
    run = Run(tmp_path, loop, n_models=5)
    for model_id in run.ids[1:4]:
        run.registry.promote(model_id, "challenger")
    run.controller.retire_old(123)
    roles = run.registry.roles()
    assert roles[run.ids[0]] == "champion"  # the champion is never retired, however old
    assert [roles.get(m) for m in run.ids[1:3]] == ["retired", "retired"]
    assert roles[run.ids[3]] == "challenger"
    assert [(e.action, e.time_ms) for e in AuditLog(tmp_path / AUDIT_FILE).read()] == [("retire", 123)] * 2
