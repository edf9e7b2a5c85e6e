"""``dope lineage`` on a real stack: ``dope up --exit-when-done`` on the synthetic market, then the command.

Every process of the stack publishes on real ZeroMQ sockets; a tap records what the featurizer, the
model services, the rendezvous and the trader published. For several decided bars (trades and holds),
``dope lineage --json`` (a separate process, reading only the store, the decoy's archive, the trader's
journal and the registry) gives the vector the featurizer published (equal to 1e-12), the scores the
models published, the prediction the rendezvous chose and the trader's decision and fills, and reports
all of them reproduced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dope.messages import Decision, Features, Fill, Prediction, Score, encode
from dope.rendezvous.records import MessageArchive
from dope.transport import ZmqSubscriber
from tests.e2e.test_up import ENV, MODELS, ROLES, Tap, run_to_end, stack_config
from tests.unit.test_services import register_models

pytestmark = pytest.mark.slow


class WideTap(Tap):
    """A tap on the featurizer and the model services too: everything the models received and answered."""

    def __post_init__(self) -> None:
        endpoints = [self.config.services.featurizer, *(d.endpoint for d in self.config.models.deploy),
                     self.config.services.rendezvous, self.config.services.trader]
        self.sub = ZmqSubscriber(endpoints, ["features.", "score.", "prediction.", "decision.", "fill."])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tap, dict[str, str]]:
    registry = tmp_path_factory.mktemp("registry")
    ids = register_models(registry, MODELS, roles=ROLES)
    work = tmp_path_factory.mktemp("lineage")
    config = stack_config(work, registry, ids)
    return work, run_to_end(config, work, WideTap(config)), ids


def dope_lineage(work: Path, symbol: str, open_time: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "dope.cli", "lineage", "--config", str(work / "dope.toml"), "--symbol", symbol,
            "--time", str(open_time), "--json"]
    done = subprocess.run(args, env={**os.environ, **ENV}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def picked(tap: Tap, symbol: str) -> list[Decision]:
    """Decided bars with a prediction: the first two trades and two holds."""
    decided = sorted((d for d in tap.of(Decision, symbol) if d.prediction is not None), key=lambda d: d.open_time)
    trades = [d for d in decided if d.action != "hold"]
    holds = [d for d in decided if d.action == "hold"]
    assert len(trades) >= 2 and len(holds) >= 2, symbol
    return trades[:2] + holds[-2:]


def test_dope_lineage_reproduces_live_decisions_of_a_real_stack(stack: tuple[Path, Tap, dict[str, str]]) -> None:
    work, tap, ids = stack
    for symbol, n in (("BTCUSDT", 4), ("ETHUSDT", 2)):
        for decision in picked(tap, symbol)[:n]:
            t = decision.open_time
            found = dope_lineage(work, symbol, t)
            (vector,) = [v for v in tap.of(Features, symbol) if v.open_time == t]
            assert found["features"]["values"] == pytest.approx(vector.values, abs=1e-12, rel=0)
            live_scores = {s.model_id: s for s in tap.of(Score, symbol) if s.open_time == t}
            assert len(live_scores) == len(MODELS)
            rows = {r["model_id"]: r for r in found["scores"]}
            assert {m: (r["prediction"], r["latency_us"]) for m, r in rows.items()} == {
                m: (s.prediction, s.latency_us) for m, s in live_scores.items()}
            assert {m: r["role"] for m, r in rows.items()} == {ids[kind]: role for kind, role in ROLES.items()}
            (prediction,) = [p for p in tap.of(Prediction, symbol) if p.open_time == t]
            chosen = found["chosen"]
            assert (chosen["model_id"], chosen["prediction"], chosen["chosen_by"], chosen["answered"]) == (
                prediction.model_id, prediction.prediction, prediction.chosen_by, prediction.answered)
            assert found["model"]["model_id"] == prediction.model_id == ids["ridge"]
            got = found["decision"]
            assert (got["action"], got["target_position"], got["reason"], got["prediction"]) == (
                decision.action, decision.target_position, decision.reason, decision.prediction)
            assert_fills(found, tap, symbol, decision)
            reproduced = found["reproduced"]
            assert (reproduced["features"], reproduced["scores"], reproduced["decision"]) == (True, True, True), \
                reproduced


def assert_fills(found: dict[str, Any], tap: Tap, symbol: str, decision: Decision) -> None:
    """A trade's fills are the live ones (journaled too); a hold has none."""
    if decision.action == "hold":
        assert found["fill"] is None
        return
    assert found["fill"] is not None and all(f["journaled"] and f["archived"] for f in found["fill"])
    live = {f.client_order_id: f for f in tap.of(Fill, symbol)}
    for fill in found["fill"]:
        assert (fill["side"], fill["qty"], fill["price"], fill["fee"]) == (
            live[fill["client_order_id"]].side, live[fill["client_order_id"]].qty,
            live[fill["client_order_id"]].price, live[fill["client_order_id"]].fee)


def test_the_decoy_archived_everything_the_stack_published(stack: tuple[Path, Tap, dict[str, str]]) -> None:
    work, tap, _ = stack
    archive = MessageArchive(work / "store")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for kind, cls in (("score", Score), ("prediction", Prediction), ("decision", Decision), ("fill", Fill)):
            live = sorted(encode(m) for m in tap.of(cls, symbol))
            assert len(live) > 2 and sorted(encode(m) for m in archive.read(kind, symbol)) == live, (symbol, kind)
