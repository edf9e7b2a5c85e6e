"""``dope up`` on the synthetic market for a chaos run: its configuration, its process, and what it publishes.

Everything about the running stack is read the way an operator reads it: the supervisor's
``<run dir>/status.json`` (``dope status --json``) for pids, states, heartbeats and endpoints, the
resolved ``<run dir>/config.json`` for the rest. No port or endpoint is hard-coded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import tomli_w

from dope.commands.status import read_status
from dope.errors import UserError
from dope.messages import Decision
from dope.services.base import endpoint_of, load_service_config
from dope.transport import ZmqSubscriber

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "TF_ENABLE_ONEDNN_OPTS": "0"}


@dataclass(frozen=True)
class StackSettings:
    """What the chaos stack runs: the seeded market, its speed, and the models bootstrapped into an empty registry."""

    seed: int = 11
    speed: float = 50.0
    rate_scale: float = 0.2
    models: tuple[str, ...] = ("zero", "ridge", "random_forest")
    bootstrap_duration: str = "12h"
    request_timeout_ms: int = 1_000


def write_stack_config(work: Path, settings: StackSettings, rest_url: str) -> Path:
    """The TOML of the chaos stack (state under ``work``), trading through the fake Binance at ``rest_url``."""
    endpoint = "tcp://127.0.0.1:0"
    raw = {
        "log_level": "INFO",
        "collector": {"source": "synthetic", "symbols": list(SYMBOLS)},
        "synthetic": {"seed": settings.seed, "speed": settings.speed, "duration": "60d",
                      "rate_scale": settings.rate_scale},
        "store": {"path": str(work / "store")},
        "registry": {"path": str(work / "registry")},
        "trader": {"upper": 0.000002, "lower": -0.000002, "state_dir": str(work / "trader"), "broker": "binance",
                   "rest_url": rest_url, "i_understand_real_orders": "yes", "fraction": 0.1},
        "binance": {"request_timeout_ms": settings.request_timeout_ms},
        "bus": {"publish": endpoint, "snapshot": endpoint, "heartbeat_ms": 200},
        "services": {name: endpoint for name in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "supervisor": {"metrics": "", "bootstrap": list(settings.models),
                       "bootstrap_duration": settings.bootstrap_duration},
        "dashboard": {"port": 0},
    }
    path = work / "dope.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def start_up(config: Path, run_dir: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``dope up --config CONFIG --run-dir RUN_DIR`` (bootstrapping the models), stderr to ``log``."""
    args = [sys.executable, "-m", "dope.cli", "up", "--config", str(config), "--run-dir", str(run_dir)]
    child_env = {**os.environ, **ENV, "PYTHONPATH": str(REPO / "src") + os.pathsep + str(REPO), **env}
    with log.open("ab") as err:
        return subprocess.Popen(args, env=child_env, stdout=subprocess.DEVNULL, stderr=err)


def stop_up(proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> int:
    """SIGTERM ``dope up`` and wait for it (SIGKILL past ``timeout_s``); its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)
    return int(proc.returncode)


def status_or_none(run_dir: Path) -> dict[str, Any] | None:
    """The supervisor's status (``dope status --json``), or None while there is none."""
    try:
        return read_status(run_dir)
    except UserError:
        return None


def wait_all_running(run_dir: Path, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> dict[str, Any]:
    """The status once every service runs (bootstrap training and start-up included)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dope up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        status = status_or_none(run_dir)
        if status and status["services"] and all(s["state"] == "running" for s in status["services"].values()):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the stack was not running after {timeout_s} s:\n{log.read_text()[-3000:]}")


def trader_endpoint(run_dir: Path, status: dict[str, Any]) -> str:
    """Where the trader publishes: its endpoint in the status, else the resolved configuration's."""
    endpoint = status["services"].get("trader", {}).get("endpoint")
    if endpoint:
        return str(endpoint)
    return endpoint_of(load_service_config(str(run_dir / "config.json")), "trader")


@dataclass
class DecisionLog:
    """Every bar the trader decided on: ``decision.*`` on the bus, and the step records of its journal.

    The journal is compacted whenever the trader starts (a new file), so its new lines are read every
    ``period_s``: a killed trader's last steps are read before its successor starts (0.5 s later at
    the earliest).
    """

    endpoint: str
    journal: Path
    period_s: float = 0.2
    decided: set[tuple[str, int]] = field(default_factory=set)
    tapped: dict[tuple[str, int], bool] = field(default_factory=dict)
    """The decisions seen on the bus: whether each had a prediction."""
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._inode, self._offset = -1, 0
        self.sub = ZmqSubscriber([self.endpoint], ["decision."])
        self.threads = [threading.Thread(target=self._tap, daemon=True),
                        threading.Thread(target=self._journal, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _tap(self) -> None:
        while not self.stop.is_set():
            msg = self.sub.receive(100)
            if isinstance(msg, Decision):
                self.decided.add((msg.symbol, msg.open_time))
                key = (msg.symbol, msg.open_time)
                self.tapped[key] = self.tapped.get(key, False) or msg.prediction is not None

    def _journal(self) -> None:
        while not self.stop.wait(self.period_s):
            self.read_journal()

    def read_journal(self) -> None:
        """Take in the step records appended since the last read (from the start of a compacted, new file)."""
        try:
            with self.journal.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                if inode != self._inode or os.fstat(handle.fileno()).st_size < self._offset:
                    self._inode, self._offset = inode, 0
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                record = msgspec.json.decode(line[9:])  # after the 8-digit checksum and a space
            except msgspec.DecodeError:
                continue  # a line cut short by a SIGKILL
            if record.get("type") == "step":
                self.decided.add((record["symbol"], int(record["open_time"])))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.sub.close()
        self.read_journal()
