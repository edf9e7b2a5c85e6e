"""Process hygiene: a service dies with its supervisor; a busy dashboard port is a clear error."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dope.config import load_config, with_overrides
from dope.errors import UserError

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "from dope.services.base import die_with_parent; import time; die_with_parent(); print('ready', flush=True);"
    " time.sleep(60)"], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_a_service_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)


def test_busy_dashboard_port_is_a_clear_error(tmp_path: Path) -> None:
    from dope.services.dashboard import build

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = with_overrides(load_config(None, environ={}), {
            "store": {"path": str(tmp_path)}, "services": {"dashboard": "tcp://127.0.0.1:0"}})
        service = build(config, port=port, endpoints=["tcp://127.0.0.1:1"])
        try:
            with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
                asyncio.run(service.run(asyncio.Event()))
        finally:
            service.close()


def test_a_service_heartbeats_while_it_catches_up_from_a_peer_that_is_down(tmp_path: Path) -> None:
    """A restarted service whose catch-up waits on a dead (restarting) peer's snapshot socket is seen
    alive all along: heartbeats flow from the start, marked ``starting`` until the catch-up is done."""
    from dope.messages import Heartbeat
    from dope.services.base import Service
    from dope.transport import ZmqPublisher, ZmqSubscriber

    class CatchingUp(Service):
        async def setup(self) -> None:
            await self.fetch_snapshots(1_500)

    peer_down = ZmqSubscriber([f"ipc://{tmp_path}/peer.sock"], ["bar."],
                              snapshot_endpoint=f"ipc://{tmp_path}/peer-snapshot.sock")
    service = CatchingUp("svc", ZmqPublisher(f"ipc://{tmp_path}/svc.sock", "svc", linger_ms=0), [peer_down],
                         heartbeat_ms=100)
    watcher = ZmqSubscriber([f"ipc://{tmp_path}/svc.sock"], ["heartbeat."])
    beats: list[tuple[float, Heartbeat]] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        began = time.monotonic()
        while time.monotonic() - began < 2.2:
            msg = watcher.receive(timeout_ms=0)
            if isinstance(msg, Heartbeat):
                beats.append((time.monotonic() - began, msg))
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    try:
        asyncio.run(main())
    finally:
        service.close()
        watcher.close()
    starting = [t for t, beat in beats if beat.counters["starting"] == 1]
    assert len(starting) >= 8 and starting[0] < 0.5  # a beat every 100 ms during the 1.5 s catch-up
    assert any(beat.counters["starting"] == 0 for _, beat in beats)
    assert service.started
