"""Beyond one machine: the collector on "host A" and the featurizer + a model service on "host B", two network
namespaces joined by a veth pair, with the bus across the link under ZeroMQ CURVE.

The link uses IPv4 link-local addresses (169.254.77.1/30 on A, .2 on B, RFC 3927): that range is
never routed, so the addresses mean something only on this one veth between the two private
namespaces; nothing outside them can be reached or disturbed (and 10.0.0.0/8 is kept for the
machine's real networks). Each namespace has nothing but its loopback and its end of the veth.

Needs root and ``ip netns`` (iproute2; ``scripts/setup-netns`` installs it); skipped otherwise.
Every child process runs inside a namespace (``ip netns exec``); the namespaces get unique
names per run and are deleted in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_A, HOST_B = "169.254.77.1", "169.254.77.2"
INTERVAL = "2s"
INTERVAL_MS = 2_000
SYMBOL = "BTCUSDT"
OBSERVED_TOPICS = ["bar.", "features.", "score.", "heartbeat."]


# ---- the namespaces ---------------------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why the namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (scripts/setup-netns installs it)"
    probe = f"dope-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` fails here: {getattr(exc, 'stderr', '') or exc}"
    _ip("netns", "del", probe)
    return None


@contextmanager
def two_hosts() -> Iterator[tuple[str, str]]:
    """Namespaces ``(a, b)`` joined by a veth, ``HOST_A``/``HOST_B`` on its ends; deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    a, b = f"dope-a-{tag}", f"dope-b-{tag}"
    made: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", f"dva{tag[:6]}", "netns", a, "type", "veth", "peer", "name", f"dvb{tag[:6]}", "netns", b)
        for ns, dev, addr in ((a, f"dva{tag[:6]}", HOST_A), (b, f"dvb{tag[:6]}", HOST_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth, and the pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


# ---- the observer (runs inside host B) --------------------------------------------------------------

def observe(config_path: str, out_path: str, ready_path: str, stop_path: str) -> None:
    """Subscribe on host B to the collector (across the link), the featurizer and the model service; also
    try the collector with a wrong key and with no key. Write what arrived to ``out_path`` as JSON."""
    from dope.messages import Bar, Features, Heartbeat, Score, topic_of
    from dope.services.base import endpoint_of, load_service_config
    from dope.transport import CurveClient, ZmqSubscriber, client_curve

    config = load_service_config(config_path)
    collector = endpoint_of(config, "collector")
    curve = client_curve(config.bus)
    assert curve is not None
    wrong = CurveClient.from_files(config.bus.curve_server_public, Path(config_path).parent / "intruder.key_secret")
    good = ZmqSubscriber([collector, endpoint_of(config, "featurizer"), config.models.deploy[0].endpoint],
                         OBSERVED_TOPICS, curve=curve)
    intruders = [ZmqSubscriber([collector], ["bar.", "heartbeat."], curve=wrong),
                 ZmqSubscriber([collector], ["bar.", "heartbeat."])]
    got: dict[str, Any] = {"bar": [], "features": [], "score": [], "denied": 0, "failed": 0, "intruder_messages": 0}
    deadline = time.monotonic() + 60
    while not Path(stop_path).exists() and time.monotonic() < deadline:
        msg = good.receive(timeout_ms=20)
        if isinstance(msg, Bar | Features | Score):
            got[topic_of(msg).split(".")[0]].append([msg.symbol, msg.open_time, getattr(msg, "model_id", "")])
        elif isinstance(msg, Heartbeat):
            _on_heartbeat(msg, got, Path(ready_path))
        got["intruder_messages"] += sum(sub.receive(timeout_ms=0) is not None for sub in intruders)
    Path(out_path).write_text(json.dumps(got), encoding="utf-8")
    for sub in (good, *intruders):
        sub.close()


def _on_heartbeat(beat: Any, got: dict[str, Any], ready: Path) -> None:
    got.setdefault("beats", {})[beat.service] = beat.counters
    if beat.service == "collector":
        got["denied"] = max(got["denied"], beat.counters.get("bus.curve_denied", 0))
        got["failed"] = max(got["failed"], beat.counters.get("bus.curve_failed", 0))
    beats = got["beats"]  # ready: the model and this observer have subscribed to the featurizer
    if "model" in beats and beats.get("featurizer", {}).get("bus.subscriptions", 0) >= len(OBSERVED_TOPICS) + 1:
        ready.touch()


# ---- the test ---------------------------------------------------------------------------------------

def register_zero_model(registry: Path) -> str:
    """A ``zero`` model for the live feature set at ``INTERVAL`` in a fresh registry; its id."""
    from dope.features import default_feature_set, training_matrix
    from dope.market.synthetic import generate_bars
    from dope.models import make_model
    from dope.models.registry import Registry

    fs = default_feature_set(INTERVAL_MS)
    start = 1_704_067_200_000
    frame = generate_bars([SYMBOL], start, start + 400 * INTERVAL_MS, INTERVAL_MS, seed=5)[SYMBOL]
    X, y, _ = training_matrix(frame, fs, 1)
    return Registry(registry).register(make_model("zero").fit(X, y), feature_set=fs, symbol=SYMBOL,
                                       interval_ms=INTERVAL_MS, train_start_ms=start,
                                       train_end_ms=start + 400 * INTERVAL_MS)


def write_config(tmp: Path, host_key: str, model_id: str) -> Path:
    """The configuration of one host: same endpoints and server key, its own client key."""
    path = tmp / f"{host_key}.toml"
    path.write_text(f"""
log_level = "INFO"
[store]
path = "{tmp / ('store-' + host_key)}"
[registry]
path = "{tmp / 'registry'}"
[bars]
interval = "{INTERVAL}"
[collector]
source = "replay"
symbols = ["{SYMBOL}"]
[replay]
speed = 0
[bus]
publish = "tcp://{HOST_A}:5555"
snapshot = "tcp://{HOST_A}:5556"
heartbeat_ms = 200
linger_ms = 2000
curve_server_secret = "{tmp / 'keys' / 'server.key_secret'}"
curve_authorized_dir = "{tmp / 'keys' / 'authorized'}"
curve_server_public = "{tmp / 'keys' / 'server.key'}"
curve_client_secret = "{tmp / 'keys' / (host_key + '.key_secret')}"
[services]
featurizer = "tcp://127.0.0.1:5557"
[[models.deploy]]
model = "{model_id}"
endpoint = "tcp://{HOST_B}:5570"
name = "model"
""", encoding="utf-8")
    return path


class Processes:
    """Child processes inside namespaces, stderr to files; all stopped by ``stop_all``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}

    def start(self, name: str, ns: str, *args: str) -> None:
        with open(self.tmp / f"{name}.log", "wb") as err:
            self.procs[name] = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], cwd=REPO,
                                                env=self.env, stdout=err, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None or proc.returncode == 0, f"{name} died ({proc.returncode}):\n{self.log(name)}"

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for(predicate: Any, seconds: float, procs: Processes, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        procs.alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {n}\n{procs.log(n)}" for n in procs.procs)
        time.sleep(0.05)


def make_keys(tmp: Path) -> None:
    from dope.transport.curve import authorize, generate_key_pair

    keys = tmp / "keys"
    generate_key_pair(keys, "server")
    for host in ("host-a", "host-b"):
        authorize(generate_key_pair(keys, host)[0], keys / "authorized")
    generate_key_pair(tmp, "intruder")  # not authorized


@pytest.mark.timeout(90)
def test_the_pipeline_crosses_the_link_under_curve_and_refuses_peers_without_the_key(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    make_keys(tmp_path)
    model_id = register_zero_model(tmp_path / "registry")
    config_a, config_b = (write_config(tmp_path, host, model_id) for host in ("host-a", "host-b"))
    out, ready, stop = tmp_path / "observed.json", tmp_path / "ready", tmp_path / "stop"
    procs = Processes(tmp_path)
    with two_hosts() as (ns_a, ns_b):
        try:
            procs.start("featurizer", ns_b, "-m", "dope.services.featurizer", "--config", str(config_b),
                        "--no-catch-up")
            procs.start("model", ns_b, "-m", "dope.services.model", "--config", str(config_b), "--deploy", "0")
            procs.start("observer", ns_b, "-c", "import sys; from tests.integration.test_netns_pipeline import "
                        "observe; observe(*sys.argv[1:])", str(config_b), str(out), str(ready), str(stop))
            wait_for(ready.exists, 40, procs, "the model service and the observer to subscribe")
            # the collector waits for the featurizer's and the observer's subscriptions across the link
            procs.start("collector", ns_a, "-m", "dope.services.collector", "--config", str(config_a),
                        "--wait-subscribers", str(1 + len(OBSERVED_TOPICS)))
            wait_for(lambda: procs.procs["collector"].poll() is not None, 40, procs, "the replay to end")
            time.sleep(1.0)  # the last features and scores are in flight
            stop.touch()
            wait_for(out.exists, 10, procs, "the observer's report")
        finally:
            procs.stop_all()
    assert procs.procs["collector"].returncode == 0, procs.log("collector")
    got = json.loads(out.read_text())
    bars = {(s, t) for s, t, _ in got["bar"]}
    features = {(s, t) for s, t, _ in got["features"]}
    scores = {(s, t) for s, t, _ in got["score"]}
    assert len(bars) > 300 and len(features) > 150, (len(bars), len(features))
    assert features <= bars  # the featurizer (host B) worked on the collector's bars (host A)
    assert scores == features and len(got["score"]) == len(features)  # one score per vector, none lost
    assert {m for _, _, m in got["score"]} == {model_id}
    assert got["intruder_messages"] == 0  # wrong key and no key: nothing, not even heartbeats
    assert got["denied"] >= 1 and got["failed"] >= 1  # the collector counted the wrong key and the keyless peer
    assert len(got["bar"]) == got["beats"]["collector"]["bars"]  # every bar the collector made crossed the link
