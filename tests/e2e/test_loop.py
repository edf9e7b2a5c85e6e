"""The DataOps loop end to end: ``dope up --synthetic --config examples/loop.toml --exit-when-done``, twice.

The example's market trends until 01:00 and mean-reverts after; the random forest champion is
bootstrapped on the hour before the switch. What must happen, in real processes on real sockets:

* the trainer retrains at the first retrain point after the switch (03:00), deploys the ridge as the shadow,
  and the gate promotes it automatically within 300 paired bars (by 03:50);
* the rendezvous' predictions come from the random forest up to the bar before the promotion and from the
  new champion from that bar on, with no restart of anything;
* two runs decide the same things at the same bars: the audit logs agree on market time, action, kind,
  roles and the gate's figures (model ids differ: they carry the wall-clock time of registration).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w

from dope.config import DopeConfig, config_from_dict
from dope.loop.audit import AUDIT_FILE, AuditEntry, AuditLog
from dope.messages import Prediction
from dope.services.supervisor import resolve_ports
from dope.timeparse import parse_time
from tests.e2e.test_up import Tap

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
EXAMPLE = REPO / "examples" / "loop.toml"
RETRAIN_AT = parse_time("2024-01-01T03:00:00Z")
MAX_BARS_TO_PROMOTION = 300
INTERVAL = 10_000
MODEL_ID = re.compile(r"\b([a-z_]+)-\d{8}T\d{4}-[0-9a-f]{6}(?:-\d+)?\b")


def loop_config(work: Path) -> DopeConfig:
    """``examples/loop.toml`` with its state under ``work`` and tcp endpoints a tap can reach."""
    raw = tomllib.loads(EXAMPLE.read_text())
    raw["store"], raw["registry"] = {"path": str(work / "store")}, {"path": str(work / "registry")}
    raw["trader"]["state_dir"] = str(work / "trader")
    raw["bus"] = {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0"}
    raw["services"] = {k: "tcp://127.0.0.1:0"
                       for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard", "trainer")}
    return resolve_ports(config_from_dict(raw))


def run_example(work: Path) -> tuple[Tap, list[AuditEntry], DopeConfig]:
    """The example run under ``work`` (bootstrap included); what the rendezvous published and the audit log."""
    config = loop_config(work)
    path = work / "loop.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    tap = Tap(config)
    args = [sys.executable, "-m", "dope.cli", "up", "--synthetic", "--config", str(path), "--exit-when-done",
            "--run-dir", str(work / "run")]
    try:
        with open(work / "up.log", "wb") as log:
            code = subprocess.run(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=log,
                                  timeout=400, cwd=work).returncode
        assert code == 0, (work / "up.log").read_text()[-3000:]
    finally:
        time.sleep(0.2)
        tap.close()
    return tap, AuditLog(work / "registry" / AUDIT_FILE).read(), config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Tap, list[AuditEntry], DopeConfig]]:
    return [run_example(tmp_path_factory.mktemp(f"loop{n}")) for n in range(2)]


def kind(model_id: str) -> str:
    return model_id.split("-", 1)[0]


def deterministic(entries: list[AuditEntry]) -> list[tuple[Any, ...]]:
    """What two runs must agree on: everything but model ids (they carry the wall-clock time of registration:
    replaced by their kind) and fit timings."""
    return [(e.time_ms, e.action, kind(e.model_id), e.from_role, e.to_role, MODEL_ID.sub(r"\1", e.reason),
             e.statistic, e.p_value, e.n_bars, e.threshold) for e in entries]


def test_the_loop_retrains_after_the_switch_and_promotes_the_new_version(two_runs: list[Any]) -> None:
    _, audit, _ = two_runs[0]
    actions = [(e.action, kind(e.model_id)) for e in audit]
    assert actions[:3] == [("register", "ridge"), ("shadow", "ridge"), ("promote", "ridge")], actions
    register, shadow, promote = audit[:3]
    assert register.time_ms == shadow.time_ms == RETRAIN_AT
    assert register.evidence["data"]["train_end_ms"] == RETRAIN_AT  # nothing after the retrain point
    assert register.evidence["parent"] == ""  # the champion is a random forest, not a ridge
    assert promote.model_id == shadow.model_id and promote.reason == "passed"
    assert promote.n_bars is not None and 200 <= promote.n_bars <= MAX_BARS_TO_PROMOTION
    assert promote.time_ms <= RETRAIN_AT + MAX_BARS_TO_PROMOTION * INTERVAL
    assert promote.p_value is not None and promote.threshold is not None and promote.p_value <= promote.threshold
    assert kind(str(promote.evidence["previous"])) == "random_forest"
    assert not [e for e in audit if e.action == "rollback"]  # the old champion did not win it back


def test_decisions_switch_to_the_new_champion_from_the_bar_of_the_promotion(two_runs: list[Any]) -> None:
    tap, audit, _ = two_runs[0]
    promote = next(e for e in audit if e.action == "promote")
    chosen = {p.open_time: p.model_id for p in tap.of(Prediction, "BTCUSDT") if p.chosen_by == "champion"}
    before = [mid for t, mid in chosen.items() if t < promote.time_ms]
    after = [mid for t, mid in chosen.items() if t >= promote.time_ms]
    assert len(before) > 1_000 and len(after) > 100
    assert {kind(m) for m in before} == {"random_forest"}
    assert set(after) == {promote.model_id}
    assert chosen[promote.time_ms - INTERVAL] == promote.evidence["previous"]
    assert chosen[promote.time_ms] == promote.model_id  # the very next bar, no restart


def test_two_runs_promote_at_the_same_bars(two_runs: list[Any]) -> None:
    first, second = (deterministic(audit) for _, audit, _ in two_runs)
    assert first == second
    picks = [sorted((p.open_time, kind(p.model_id)) for p in tap.of(Prediction, "BTCUSDT"))
             for tap, _, _ in two_runs]
    assert picks[0] == picks[1]
