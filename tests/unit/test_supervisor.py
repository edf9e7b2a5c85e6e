"""The supervisor: plan, ports, backoff, metrics format, and real processes restarted and stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dope.commands.status import format_status, read_status
from dope.config import config_from_dict
from dope.errors import UserError
from dope.services.metrics import MetricsServer, ServiceMetrics, parse_address, render_metrics
from dope.services.supervisor import (
    ServiceSpec,
    Supervisor,
    backoff_ms,
    default_deployments,
    lock_run_dir,
    place_endpoints,
    plan_services,
    resolve_ports,
)
from dope.transport import ZmqPublisher

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.unit.test_supervisor_fake_service"
PYTHONPATH = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout's code, not an installed one


def test_plan_expands_models_and_skips_absent_modules() -> None:
    config = config_from_dict({"models": {"deploy": [
        {"model": "role:champion", "endpoint": "tcp://127.0.0.1:7100", "name": "champ"},
        {"model": "zero-1", "endpoint": "tcp://127.0.0.1:7101"}]},
        "supervisor": {"services": ["featurizer", "models", "dashboard", "collector"]}})
    specs = plan_services(config, exists=lambda m: m != "dope.services.dashboard")
    assert [s.name for s in specs] == ["featurizer", "champ", "model-1", "collector"]
    assert specs[1].args == ("--deploy", "0") and specs[2].endpoint == "tcp://127.0.0.1:7101"
    assert specs[0].first_args == ("--no-catch-up",) and specs[-1].is_source
    assert specs[-1].args == ("--wait-subscribers", "4")  # the featurizer, two model services, the supervisor


def test_a_restarted_source_waits_only_for_the_readers_running_now(tmp_path: Path) -> None:
    """A collector killed together with a bar reader must not hold its source until that reader is back."""
    config = config_from_dict({"supervisor": {"services": ["featurizer", "trader", "collector"]}})
    specs = plan_services(config, exists=lambda module: True)
    sup = Supervisor(config, tmp_path / "run", specs=specs)
    try:
        featurizer, trader, collector = sup.processes
        assert sup.start_args(collector) == ["--wait-subscribers", "3"]  # first start: every reader
        assert sup.start_args(featurizer) == ["--no-catch-up"]
        featurizer.starts = trader.starts = collector.starts = 1
        featurizer.state, trader.state = "running", "backoff"  # the trader was killed with the collector
        assert sup.start_args(collector) == ["--wait-subscribers", "2"]  # the featurizer and the supervisor
        assert sup.start_args(featurizer) == []  # a restarted featurizer catches up
    finally:
        sup._close()


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_ms(n, 500, 3_000) for n in (1, 2, 3, 4, 5)] == [500, 1_000, 2_000, 3_000, 3_000]


def test_resolve_ports_gives_distinct_free_ports() -> None:
    config = config_from_dict({
        "bus": {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0"},
        "services": {k: "tcp://127.0.0.1:0" for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "models": {"deploy": [{"model": "a", "endpoint": "tcp://127.0.0.1:0"}]},
        "supervisor": {"metrics": "127.0.0.1:0"}})
    resolved = resolve_ports(config)
    endpoints = [resolved.bus.publish, resolved.bus.snapshot, resolved.models.deploy[0].endpoint,
                 *(getattr(resolved.services, k) for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard"))]
    ports = [int(e.rsplit(":", 1)[1]) for e in endpoints] + [parse_address(resolved.supervisor.metrics)[1]]
    assert all(p > 0 for p in ports) and len(set(ports)) == len(ports)


def test_dope_up_puts_private_endpoints_on_the_run_sockets_and_keeps_explicit_ones(tmp_path: Path) -> None:
    config = config_from_dict({
        "services": {"trader": "tcp://127.0.0.1:0", "decoy": "tcp://127.0.0.1:7001", "featurizer": "tcp://0.0.0.0:0"},
        "bus": {"allow_plaintext_remote": True},
        "models": {"deploy": [{"model": "a", "endpoint": "tcp://127.0.0.1:0", "name": "model-a"}]}})
    placed = place_endpoints(config, tmp_path / "run", "run-1")
    sockets = (tmp_path / "run" / "bus").resolve()
    assert placed.bus.run_id == "run-1"
    assert placed.bus.publish == f"ipc://{sockets}/collector.sock"  # the built-in default 5555
    assert placed.bus.snapshot == f"ipc://{sockets}/collector-snapshot.sock"
    assert placed.services.trader == f"ipc://{sockets}/trader.sock"  # loopback, any port
    assert placed.services.rendezvous == f"ipc://{sockets}/rendezvous.sock"
    assert placed.models.deploy[0].endpoint == f"ipc://{sockets}/model-a.sock"
    assert placed.services.decoy == "tcp://127.0.0.1:7001"  # explicit: kept
    assert placed.services.featurizer.startswith("tcp://0.0.0.0:") and not placed.services.featurizer.endswith(":0")
    again = place_endpoints(config, tmp_path / "run2")
    assert again.bus.run_id and again.bus.run_id != placed.bus.run_id
    deep = tmp_path / ("d" * 90)
    far = place_endpoints(config, deep, "run-2")  # too long for a Unix socket path: a private folder in tmp
    assert far.services.trader.startswith("ipc://") and "dope-run-2" in far.services.trader
    assert len(far.services.trader) - len("ipc://") <= 107 and oct(Path(far.services.trader[6:]).parent.stat().st_mode)[-3:] == "700"


def test_a_second_dope_up_in_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    held = lock_run_dir(tmp_path)
    try:
        with pytest.raises(UserError, match="another `dope up` is running in"):
            lock_run_dir(tmp_path)
    finally:
        held.close()
    lock_run_dir(tmp_path).close()


def test_default_deployments_rank_by_role() -> None:
    config = default_deployments(config_from_dict({}), {"z-1": "canary", "rf-1": "champion", "old": "retired",
                                                        "l-1": "challenger"})
    assert [d.model for d in config.models.deploy] == ["rf-1", "l-1", "z-1"]


def test_metrics_text_parses_as_prometheus_exposition() -> None:
    services = [ServiceMetrics("featurizer", True, 0.25, 0, 12.5, {"features": 3, "bus.sent": 10}, 0.0),
                ServiceMetrics('we"ird\\name', False, float("nan"), 2, 0.0, {}, 1.5)]
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(services))}
    up = {s.labels["service"]: s.value for s in families["dope_service_up"].samples}
    assert up == {"featurizer": 1.0, 'we"ird\\name': 0.0}
    counters = {(s.labels["service"], s.labels["counter"]): s.value
                for s in families["dope_service_counter"].samples}
    assert counters == {("featurizer", "features"): 3.0, ("featurizer", "bus.sent"): 10.0}
    assert families["dope_service_restarts"].type == "counter"
    restarts = {s.labels["service"]: s.value for s in families["dope_service_restarts"].samples}
    assert restarts['we"ird\\name'] == 2.0


def test_metrics_server_serves_on_loopback() -> None:
    server = MetricsServer(lambda: [ServiceMetrics("trader", True, 0.1, 1, 3.0, {"decisions": 7})])
    try:
        assert server.address.startswith("127.0.0.1:")
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        assert 'dope_service_counter_total{service="trader",counter="decisions"} 7' in text
    finally:
        server.close()


def fake_spec(name: str, port_config: dict[str, str], behaviour: str = "ok") -> ServiceSpec:
    return ServiceSpec(name, FAKE, port_config[name], ("--endpoint", port_config[name], "--behaviour", behaviour))


def supervise(tmp_path: Path, behaviours: dict[str, str], body: object, *, run_id: str = "",
              endpoints: dict[str, str] | None = None, sources: frozenset[str] = frozenset(),
              **settings: int) -> Supervisor:
    """Run a supervisor over fake services in a thread; ``body(supervisor)`` acts, then it is stopped.
    ``sources`` start only once the others are running, as the collector does."""
    ports = resolve_ports(config_from_dict({"models": {"deploy": [
        {"model": n, "endpoint": "tcp://127.0.0.1:0", "name": n} for n in behaviours]}}))
    endpoints = {**{d.name: d.endpoint for d in ports.models.deploy}, **(endpoints or {})}
    config = config_from_dict({"bus": {"heartbeat_ms": 100, "run_id": run_id}, "supervisor": {
        "metrics": "127.0.0.1:0", "restart_min_ms": 200, "restart_max_ms": 800, "stop_timeout_ms": 1_500,
        "start_timeout_ms": 20_000, **settings}})
    config = resolve_ports(config)
    specs = [dataclasses.replace(fake_spec(n, endpoints, b), is_source=n in sources) for n, b in behaviours.items()]
    supervisor = Supervisor(config, tmp_path / "run", specs=specs, env={"PYTHONPATH": PYTHONPATH})
    stop = threading.Event()
    thread = threading.Thread(target=lambda: setattr(supervisor, "rc", supervisor.run(stop)))
    thread.start()
    try:
        body(supervisor)  # type: ignore[operator]
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    return supervisor


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_supervisor_restarts_a_killed_service_and_stops_everything(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def body(sup: Supervisor) -> None:
        wait_for(lambda: all(p.state == "running" for p in sup.processes))
        victim = sup.processes[0]
        old_pid = victim.pid
        assert old_pid is not None
        victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        wait_for(lambda: victim.restarts == 1 and victim.state == "running" and victim.pid != old_pid)
        wait_for(lambda: sup.beats["a"].counters.get("ticks", 0) > 0)
        status = read_status(tmp_path / "run")
        seen["status"] = status
        with urllib.request.urlopen(status["metrics"], timeout=5) as response:
            seen["metrics"] = response.read().decode()

    sup = supervise(tmp_path, {"a": "ok", "b": "ok"}, body, run_id="run-t")
    status = seen["status"]
    assert status["services"]["a"]["restarts"] == 1 and status["services"]["a"]["last_exit"] == -9  # type: ignore[index]
    assert 'dope_service_restarts_total{service="a"} 1' in seen["metrics"]  # type: ignore[operator]
    assert all(p.state == "stopped" and p.proc.returncode == 0 for p in sup.processes)  # type: ignore[union-attr]
    table = format_status(read_status(tmp_path / "run"), int(time.time() * 1000))
    assert "a " in table and "stopped" in table and table.startswith("run run-t, supervisor pid")


def test_a_service_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    def body(sup: Supervisor) -> None:
        wait_for(lambda: sup.processes[0].state == "running")

    began = time.monotonic()
    sup = supervise(tmp_path, {"stubborn": "stubborn"}, body)
    assert sup.processes[0].proc.returncode == -signal.SIGKILL  # type: ignore[union-attr]
    assert time.monotonic() - began < 25


def test_a_configuration_error_fails_the_start_and_is_not_restarted(tmp_path: Path) -> None:
    def body(sup: Supervisor) -> None:
        wait_for(lambda: sup.processes[0].state == "failed")

    sup = supervise(tmp_path, {"broken": "bad-config"}, body)
    broken = sup.processes[0]
    assert broken.last_exit == 2 and broken.starts == 1 and sup.rc == 1  # type: ignore[attr-defined]
    assert "fake: bad configuration" in (tmp_path / "run" / "logs" / "broken.log").read_text()


def test_status_without_a_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dope up"):
        read_status(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"updated_ms": 0, "services": {}}))
    assert "STALE" in format_status(read_status(tmp_path), 60_000)


def test_the_supervisor_never_takes_another_runs_heartbeats_for_its_services(tmp_path: Path) -> None:
    """The issue's cross-talk: another run's "ghost" holds the endpoint this run's ghost should bind. This
    run's ghost fails with a clear bind error; the other run's heartbeats are dropped and counted. (The ghost
    starts as a source, once ``a`` runs: a service failing while the others start stops the start.)"""
    other = ZmqPublisher("tcp://127.0.0.1:0", "ghost", linger_ms=0, heartbeat_ms=50, run_id="run-other")
    seen: dict[str, object] = {}

    def body(sup: Supervisor) -> None:
        def beat_until() -> bool:
            other.heartbeat()
            return sup.processes[1].state == "failed" and sup.processes[0].state == "running"
        wait_for(beat_until)
        for _ in range(10):
            other.heartbeat()
            time.sleep(0.05)
        seen["status"] = sup.status()
        seen["foreign"] = sup._monitor.stats.foreign

    try:
        sup = supervise(tmp_path, {"a": "ok", "ghost": "ok"}, body, run_id="run-mine",
                        endpoints={"ghost": other.endpoint}, sources=frozenset({"ghost"}))
    finally:
        other.close()
    status = seen["status"]
    assert status["run_id"] == "run-mine"  # type: ignore[index]
    assert "ghost" not in sup.beats and status["services"]["ghost"]["heartbeat_age_s"] is None  # type: ignore[index]
    assert sup.processes[1].last_exit == 2 and seen["foreign"] >= 10  # type: ignore[operator]
    assert "cannot bind bus endpoint" in (tmp_path / "run" / "logs" / "ghost.log").read_text()


def test_bootstrap_trains_on_the_configured_synthetic_market(tmp_path: Path) -> None:
    """The bootstrap's training bars are the market ``[synthetic]`` describes (rate scale, regimes), so the
    first champion learns the market the stack then streams, not the bare calibrated one."""
    from dope.market.synthetic import generate_bars
    from dope.services.supervisor import _bootstrap_store

    config = config_from_dict({
        "registry": {"path": str(tmp_path / "registry")},
        "synthetic": {"rate_scale": 0.2, "start": "2024-01-01",
                      "regimes": [{"start": "2024-01-01T00:30", "vol_scale": 2.0, "autocorr": 0.3}]}})
    store = _bootstrap_store(config, 3_600_000)
    symbol = config.collector.symbols[0]
    stored = store.read_bars(symbol, config.bars.interval_ms)
    start = stored["open_time"].iloc[0]
    plain = generate_bars([symbol], start, start + 3_600_000, config.bars.interval_ms, seed=config.synthetic.seed)
    assert len(stored) == len(plain[symbol]) == 360
    assert stored["count"].sum() < 0.5 * plain[symbol]["count"].sum()   # rate_scale 0.2 applied


def test_the_loop_adds_the_trainer_before_the_collector_as_a_bar_reader() -> None:
    config = config_from_dict({"loop": {"enabled": True},
                               "supervisor": {"services": ["featurizer", "trader", "collector"]}})
    specs = plan_services(config, exists=lambda module: True)
    assert [s.name for s in specs] == ["featurizer", "trader", "trainer", "collector"]
    assert specs[2].module == "dope.services.trainer" and specs[2].first_args == ("--first-start",)
    assert specs[-1].args == ("--wait-subscribers", "4")  # featurizer, trader, trainer and the supervisor
    off = config_from_dict({"supervisor": {"services": ["featurizer", "trader", "collector"]}})
    assert "trainer" not in [s.name for s in plan_services(off, exists=lambda module: True)]
