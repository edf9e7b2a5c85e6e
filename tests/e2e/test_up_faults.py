"""``dope up`` under faults: a model slower than the deadline, SIGKILL of the champion, a promotion mid-run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dope.config import DopeConfig, with_overrides
from dope.features import default_feature_set
from dope.messages import Decision, Prediction, Scorecard
from dope.models.registry import Registry
from tests.e2e.test_up import (
    INTERVAL,
    MODELS,
    ROLES,
    Tap,
    register_models,
    run_to_end,
    stack_config,
    start_up,
    wait_status,
)

pytestmark = pytest.mark.slow
WARMUP = default_feature_set(INTERVAL).warmup


def wall_deadline(config: DopeConfig) -> DopeConfig:
    """The live rendezvous deadline (a replay's default waits for every model: docs/rendezvous.md)."""
    return with_overrides(config, {"rendezvous": {"deadline_mode": "wall"}})


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("registry")
    return root, register_models(root, MODELS, roles=ROLES)


def test_a_model_slower_than_the_deadline_is_passed_over_and_its_misses_counted(
        tmp_path: Path, registry_dir: tuple[Path, dict[str, str]]) -> None:
    root, ids = registry_dir
    config = wall_deadline(stack_config(tmp_path, root, ids, duration="25m", deadline_ms=40, speed=100.0,
                                        deploy={"ridge": {"delay_ms": 100}, "random_forest": {}, "zero": {}}))
    tap = run_to_end(config, tmp_path)
    preds = tap.of(Prediction)
    assert len(preds) == 2 * (150 - WARMUP + 1)
    assert all(p.chosen_by == "fallback" and p.model_id != ids["ridge"] for p in preds)
    assert all(ids["ridge"] in p.missed for p in preds)
    assert sum(p.model_id == ids["random_forest"] for p in preds) >= 0.9 * len(preds)
    last = {}
    for card in tap.of(Scorecard):
        last[(card.model_id, card.symbol)] = card
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ridge = last[(ids["ridge"], symbol)]
        assert ridge.misses == 30 and ridge.chosen == 0
        assert last[(ids["random_forest"], symbol)].chosen >= 27


def test_sigkill_of_the_champion_and_a_promotion_while_running(
        tmp_path: Path, registry_dir: tuple[Path, dict[str, str]]) -> None:
    root, ids = registry_dir
    config = wall_deadline(stack_config(tmp_path, root, ids, duration="60m", speed=150.0, deadline_ms=150))
    tap = Tap(config)
    proc = start_up(config, tmp_path, "--exit-when-done")
    run = tmp_path / "run"
    try:
        deadline = time.monotonic() + 120
        while len(tap.of(Prediction)) < 10:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
            time.sleep(0.05)
        status = wait_status(run, lambda s: s["services"]["model-ridge"]["pid"] is not None)
        os.kill(status["services"]["model-ridge"]["pid"], signal.SIGKILL)
        wait_status(run, lambda s: s["services"]["model-ridge"]["restarts"] == 1
                    and s["services"]["model-ridge"]["state"] == "running")
        time.sleep(1.0)
        Registry(root).promote(ids["random_forest"], "champion")
        promoted_after = max(p.open_time for p in tap.of(Prediction))
        assert proc.wait(timeout=180) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        time.sleep(0.2)
        tap.close()
        Registry(root).promote(ids["ridge"], "champion")  # the module's registry is shared
    for symbol in ("BTCUSDT", "ETHUSDT"):
        preds = sorted(tap.of(Prediction, symbol), key=lambda p: p.open_time)
        decisions = {d.open_time for d in tap.of(Decision, symbol)}
        assert len(preds) == 360 - WARMUP + 1 and len(decisions) == 360  # no bar without a decision
        assert all(p.prediction is not None for p in preds)
        before = [p for p in preds if p.open_time <= promoted_after]
        after = [p for p in preds if p.open_time > promoted_after + INTERVAL]
        assert {p.model_id for p in after} == {ids["random_forest"]} and all(p.chosen_by == "champion" for p in after)
        assert any(p.chosen_by == "fallback" for p in before)  # while the champion was down
        rejoined = [p for p in before if p.chosen_by == "champion" and p.model_id == ids["ridge"]]
        assert rejoined and rejoined[-1].open_time > min(p.open_time for p in before if p.chosen_by == "fallback")
