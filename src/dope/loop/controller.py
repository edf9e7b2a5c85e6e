"""The loop's decisions: deploy a fitted version as the shadow, judge it, promote, roll back, retire.

Pure of sockets and processes: the trainer service (``dope.services.trainer``) feeds the
:class:`~dope.loop.ledger.Ledger` and calls :meth:`Controller.checkpoint` at market-time checkpoints and
:meth:`Controller.deployed` when a fit registered a model. Every decision changes the registry's
``roles.json`` (which the role-following model services and the rendezvous reload) and is appended to the
audit log with its evidence. One candidate at a time holds the ``shadow`` role.

* **Gate** (``mode``): after ``min_bars`` paired bars of the candidate and the champion, the pre-registered
  test (:func:`dope.loop.gate.promotion_test`, deflated for the candidates tried since the last
  promotion), at every checkpoint until ``max_candidate_bars``; the level is divided among those looks. ``auto`` promotes on a pass, ``propose`` writes ``<registry>/proposals/<id>.json`` (applied
  by ``dope models approve ID``: :func:`approve`), ``off`` records the test as a ``reject`` and changes
  nothing. A candidate still failing after ``max_candidate_bars`` is rejected and retired.
* **Rollback**: after a promotion the previous champion scores on as a challenger; after
  ``rollback_bars`` (0: ``min_bars``) paired bars the same test runs with it as the candidate, and if it
  wins it is restored.
* **Retire**: of each loop kind the newest ``keep`` versions keep their roles; older ones that hold none of
  the live roles are retired (artifacts stay on disk: decisions in the trader's journal and the decoy
  archive may name them).
* **Restart**: :meth:`Controller.recover` rebuilds the candidate and the rollback watch from the roles and
  the audit log (their paired bars start again from zero: the ledger is in memory).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from dope.errors import UserError
from dope.fileio import atomic_write_json
from dope.loop.audit import AUDIT_FILE, Action, AuditEntry, AuditLog, gate_entry, rejections_since_promotion
from dope.loop.config import LoopConfig
from dope.loop.gate import GateConfig, GateDecision, promotion_test
from dope.loop.ledger import Ledger
from dope.loop.schedule import checkpoint_bars
from dope.models.registry import Registry

PROPOSALS_DIR: Final = "proposals"
LIVE_ROLES: Final = frozenset({"champion", "challenger", "shadow", "canary"})
log = logging.getLogger("dope.loop")


@dataclass
class Candidate:
    """The version being judged against the champion, scoring as the shadow since ``since_ms``."""

    model_id: str
    kind: str
    since_ms: int
    judged: bool = False
    """Proposed (``propose``) or tested (``off``): no more tests, it waits for approval or its successor."""


@dataclass
class Watch:
    """After a promotion: the previous champion, scoring as a challenger, may win the champion back."""

    previous: str
    champion: str
    since_ms: int


class Controller:
    """Decisions of the loop over one registry, audit log and ledger."""

    def __init__(self, loop: LoopConfig, registry: Registry, ledger: Ledger, *, horizon: int = 1,
                 audit: AuditLog | None = None) -> None:
        self.loop = loop
        self.registry = registry
        self.ledger = ledger
        self.gate = loop.gate(horizon)
        self.looks = 1 + math.ceil(max(0, loop.max_candidate_bars - loop.min_bars) / checkpoint_bars(loop.min_bars))
        self.candidate_gate = dataclasses.replace(self.gate, level=loop.level / self.looks)
        """A candidate is tested at every checkpoint from ``min_bars`` to ``max_candidate_bars`` paired bars:
        the level is shared among those looks (Bonferroni), or the repeated tests would promote luck."""
        self.audit = audit or AuditLog(registry.root / AUDIT_FILE)
        self.candidate: Candidate | None = None
        self.watch: Watch | None = None
        self.counters: dict[str, int] = {"candidates": 0, "promotions": 0, "rejections": 0, "rollbacks": 0,
                                         "proposals": 0, "retirements": 0, "gate_tests": 0, "paired_bars": 0,
                                         "p_value_ppm": -1}

    # ---- state -------------------------------------------------------------------------------------
    def champion(self) -> str | None:
        return self.registry.champion()

    def judged_models(self) -> list[str]:
        """The models whose scores a checkpoint must have (champion, candidate, watched predecessor)."""
        ids = [self.champion(), self.candidate.model_id if self.candidate else None,
               self.watch.previous if self.watch else None]
        return sorted({i for i in ids if i})

    def recover(self) -> None:
        """Rebuild the candidate and the rollback watch from ``roles.json`` and the audit log."""
        roles, entries = self.registry.roles(), self.audit.read()
        last: dict[str, AuditEntry] = {e.model_id: e for e in entries}
        shadows = [e for e in entries if e.action == "shadow" and roles.get(e.model_id) == "shadow"
                   and last[e.model_id].action in ("shadow", "reject")]
        if shadows:
            entry = shadows[-1]
            judged = last[entry.model_id].action == "reject" or self._proposal(entry.model_id).exists()
            self.candidate = Candidate(entry.model_id, self.kind_of(entry.model_id), entry.time_ms, judged)
        promotes = [e for e in entries if e.action in ("promote", "rollback")]
        if promotes and promotes[-1].action == "promote":
            entry = promotes[-1]
            previous = str(entry.evidence.get("previous") or "")
            if previous and roles.get(previous) == "challenger" and roles.get(entry.model_id) == "champion":
                self.watch = Watch(previous, entry.model_id, entry.time_ms)
        log.info("loop state recovered: candidate %s, watch %s", self.candidate, self.watch)

    def last_retrain_ms(self) -> int | None:
        """Market time of the newest registration (the schedule resumes after it)."""
        times = [e.time_ms for e in self.audit.read() if e.action == "register"]
        return max(times) if times else None

    # ---- events ------------------------------------------------------------------------------------
    def deployed(self, model_id: str, time_ms: int, *, reason: str, evidence: dict[str, Any]) -> None:
        """A fit registered ``model_id`` at ``time_ms``: audit it, make it the shadow (retiring any other
        shadow first), start judging it from the next bar."""
        self.audit.append(AuditEntry(time_ms=time_ms, action="register", model_id=model_id, reason=reason,
                                     evidence=evidence))
        for other, role in sorted(self.registry.roles().items()):
            if role == "shadow" and other != model_id:
                self._retire_shadow(other, time_ms)
        self.registry.promote(model_id, "shadow")
        self.audit.append(AuditEntry(time_ms=time_ms, action="shadow", model_id=model_id, to_role="shadow",
                                     reason=f"candidate against {self.champion() or 'no champion'}"))
        self.candidate = Candidate(model_id, self.kind_of(model_id), time_ms)
        self.counters["candidates"] += 1

    def fit_failed(self, kind: str, time_ms: int, reason: str) -> None:
        """A fit failed or timed out: audited as a rejection of the version it would have been."""
        self.audit.append(AuditEntry(time_ms=time_ms, action="reject", model_id=f"{kind}@{time_ms}",
                                     reason=f"fit failed: {reason}"[:2000], evidence={"kind": kind}))
        self.counters["rejections"] += 1

    def checkpoint(self, time_ms: int) -> None:
        """At a market-time checkpoint: settle the ledger, judge the candidate and the watched predecessor."""
        self.ledger.settle(time_ms)
        self._sync_roles(time_ms)
        if self.candidate is not None and not self.candidate.judged:
            self._judge_candidate(time_ms)
        if self.watch is not None:
            self._judge_watch(time_ms)

    # ---- the gate ----------------------------------------------------------------------------------
    def _test(self, candidate: str, champion: str, since_ms: int, until_ms: int, n_candidates: int,
              min_bars: int, gate: GateConfig) -> GateDecision | None:
        paired = self.ledger.paired(candidate, champion, since_ms, until_ms)
        self.counters["paired_bars"] = paired.n
        if paired.n < min_bars:
            return None
        decision = promotion_test(paired.errors_a, paired.errors_b, paired.pnl_a, paired.pnl_b,
                                  n_candidates=n_candidates, config=gate)
        self.counters["gate_tests"] += 1
        self.counters["p_value_ppm"] = round(decision.p_value * 1_000_000)
        log.info("gate at %d: %s vs %s over %d bars: %s (DM %.2f, p %.3g, threshold %.3g, P&L diff %.4g/bar)",
                 until_ms, candidate, champion, paired.n, decision.reason, decision.statistic, decision.p_value,
                 decision.threshold, decision.pnl_diff)
        return decision

    def _judge_candidate(self, time_ms: int) -> None:
        candidate, champion = self.candidate, self.champion()
        assert candidate is not None
        if champion is None:  # nothing to beat: the first version becomes champion
            self._promote(candidate.model_id, None, time_ms, None)
            return
        n_candidates = rejections_since_promotion(self.audit.read()) + 1
        decision = self._test(candidate.model_id, champion, candidate.since_ms, time_ms, n_candidates,
                              self.gate.min_bars, self.candidate_gate)
        if decision is None:
            return
        if decision.passed and self.loop.mode == "auto":
            self._promote(candidate.model_id, champion, time_ms, decision)
        elif decision.passed and self.loop.mode == "propose":
            self._propose(candidate, champion, time_ms, decision)
        elif self.loop.mode == "off":
            self.audit.append(gate_entry(time_ms, "reject", candidate.model_id, decision, from_role="shadow",
                                         to_role="shadow", evidence={"champion": champion, "mode": "off",
                                                                     "gate": decision.reason}))
            candidate.judged = True
            self.counters["rejections"] += 1
        elif decision.n_bars >= self.loop.max_candidate_bars:
            self._reject(candidate.model_id, champion, time_ms, decision)

    def _promote(self, model_id: str, champion: str | None, time_ms: int, decision: GateDecision | None) -> None:
        self.registry.promote(model_id, "champion")
        evidence = {"previous": champion, "mode": self.loop.mode}
        if decision is None:
            self.audit.append(AuditEntry(time_ms=time_ms, action="promote", model_id=model_id, from_role="shadow",
                                         to_role="champion", reason="no champion to beat", evidence=evidence))
        else:
            self.audit.append(gate_entry(time_ms, "promote", model_id, decision, from_role="shadow",
                                         to_role="champion", evidence={**evidence, "looks": self.looks}))
        self.counters["promotions"] += 1
        self.candidate = None
        self.watch = Watch(champion, model_id, time_ms) if champion else None
        log.info("promoted %s over %s at %d", model_id, champion, time_ms)
        self.retire_old(time_ms)

    def _reject(self, model_id: str, champion: str, time_ms: int, decision: GateDecision) -> None:
        self.registry.retire(model_id)
        self.audit.append(gate_entry(time_ms, "reject", model_id, decision, from_role="shadow", to_role="retired",
                                     evidence={"champion": champion}))
        self.counters["rejections"] += 1
        self.candidate = None
        log.info("rejected %s after %d paired bars (%s)", model_id, decision.n_bars, decision.reason)

    def _retire_shadow(self, model_id: str, time_ms: int) -> None:
        """A shadow makes room for a new candidate: a candidate still judged is rejected, any other retired."""
        being_judged = self.candidate is not None and self.candidate.model_id == model_id and not self.candidate.judged
        self.registry.retire(model_id)
        action: Action = "reject" if being_judged else "retire"
        reason = ("replaced by a newer candidate before it passed" if being_judged
                  else "the shadow slot goes to a new candidate")
        self.audit.append(AuditEntry(time_ms=time_ms, action=action, model_id=model_id, from_role="shadow",
                                     to_role="retired", reason=reason))
        self.counters["rejections" if being_judged else "retirements"] += 1

    def _propose(self, candidate: Candidate, champion: str, time_ms: int, decision: GateDecision) -> None:
        proposal = {"model_id": candidate.model_id, "champion": champion, "time_ms": time_ms,
                    "decision": msgspec.to_builtins(decision)}
        path = self._proposal(candidate.model_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, proposal, indent=2)
        candidate.judged = True
        self.counters["proposals"] += 1
        log.info("proposed %s over %s: dope models approve %s", candidate.model_id, champion, candidate.model_id)

    def _proposal(self, model_id: str) -> Path:
        return proposal_path(self.registry, model_id)

    def _sync_roles(self, time_ms: int) -> None:
        """Follow changes made outside the trainer (``dope models approve``, a manual promote or retire)."""
        roles = self.registry.roles()
        candidate = self.candidate
        if candidate is not None and roles.get(candidate.model_id) == "champion":
            previous = _last_promote(self.audit.read(), candidate.model_id)
            self.candidate = None
            self.watch = Watch(previous, candidate.model_id, time_ms) if previous else None
        elif candidate is not None and roles.get(candidate.model_id) != "shadow":
            self.candidate = None
        if self.watch is not None and (roles.get(self.watch.previous) != "challenger"
                                       or roles.get(self.watch.champion) != "champion"):
            self.watch = None

    # ---- rollback ----------------------------------------------------------------------------------
    def _judge_watch(self, time_ms: int) -> None:
        watch = self.watch
        assert watch is not None
        decision = self._test(watch.previous, watch.champion, watch.since_ms, time_ms, 1,
                              self.loop.rollback_bars or self.gate.min_bars, self.gate)  # one look
        if decision is None:
            return
        self.watch = None
        if not decision.passed:
            log.info("%s keeps the champion's role: %s did not beat it (%s)", watch.champion, watch.previous,
                     decision.reason)
            return
        self.registry.promote(watch.previous, "champion")
        self.audit.append(gate_entry(time_ms, "rollback", watch.previous, decision, from_role="challenger",
                                     to_role="champion", evidence={"demoted": watch.champion}))
        self.counters["rollbacks"] += 1
        log.warning("rolled back: %s is champion again, %s did worse live", watch.previous, watch.champion)

    # ---- retiring ----------------------------------------------------------------------------------
    def retire_old(self, time_ms: int) -> None:
        """Of each loop kind keep the newest ``keep`` versions; retire older ones outside the live duty."""
        kinds = set(self.loop.kinds) or {self.kind_of(c) for c in [self.champion()] if c}
        protected = set(self.judged_models()) | ({self.watch.champion} if self.watch else set())
        roles = self.registry.roles()
        for kind in sorted(kinds):
            versions = [m for m in self.registry.list() if m.get("kind") == kind]
            versions.sort(key=lambda m: (m.get("created_ms", 0), m["model_id"]), reverse=True)
            for meta in versions[self.loop.keep:]:
                model_id = meta["model_id"]
                role = roles.get(model_id, "")
                if model_id in protected or role == "retired" or role in ("champion", "canary"):
                    continue
                self.registry.retire(model_id)
                self.audit.append(AuditEntry(time_ms=time_ms, action="retire", model_id=model_id, from_role=role,
                                             to_role="retired", reason=f"older than the newest {self.loop.keep} "
                                             f"versions of {kind}"))
                self.counters["retirements"] += 1

    def kind_of(self, model_id: str) -> str:
        """The kind of a registered model (from its metadata; the id's prefix if unreadable)."""
        try:
            return str(self.registry.show(model_id)["kind"])
        except UserError:
            return model_id.split("-", 1)[0]


def _last_promote(entries: list[AuditEntry], model_id: str) -> str:
    """The champion ``model_id``'s promotion replaced (from its newest ``promote`` entry)."""
    for entry in reversed(entries):
        if entry.action == "promote" and entry.model_id == model_id:
            return str(entry.evidence.get("previous") or "")
    return ""


def proposal_path(registry: Registry, model_id: str) -> Path:
    """Where the proposal to promote ``model_id`` is written: ``<registry>/proposals/<id>.json``."""
    registry.path_of(model_id)  # a bad id is refused here
    return registry.root / PROPOSALS_DIR / f"{model_id}.json"


def approve(registry: Registry, model_id: str, audit: AuditLog | None = None) -> AuditEntry:
    """Apply the proposal for ``model_id``: promote it to champion and audit the promotion with the gate's
    evidence (the test's market time; the approval's wall time in the evidence). The proposal file is kept
    as ``<id>.approved.json``."""
    path = proposal_path(registry, model_id)
    if not path.exists():
        raise UserError(f"no proposal for {model_id} under {path.parent} (the trainer writes one when a "
                        "candidate passes the gate in mode 'propose')")
    proposal = msgspec.json.decode(path.read_bytes())
    decision = msgspec.convert(proposal["decision"], GateDecision)
    previous = registry.champion()
    registry.promote(model_id, "champion")
    entry = gate_entry(int(proposal["time_ms"]), "promote", model_id, decision, from_role="shadow",
                       to_role="champion", evidence={"previous": previous, "mode": "propose",
                                                     "approved_wall_ms": time.time_ns() // 1_000_000})
    (audit or AuditLog(registry.root / AUDIT_FILE)).append(entry)
    path.rename(path.with_name(f"{model_id}.approved.json"))
    return entry
