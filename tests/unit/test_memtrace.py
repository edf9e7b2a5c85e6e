"""``DOPE_TRACEMALLOC``: a service process writes tracemalloc snapshots whose difference names what grew."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dope.memtrace import main, top_growth

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import time
from dope.memtrace import start_from_env
start_from_env("leaky")
kept = []
for _ in range(40):
    kept.append(bytearray(250_000))  # 10 MB held by this line
    time.sleep(0.02)
time.sleep(0.5)
"""


def test_snapshots_of_a_growing_process_name_the_line_that_grows(tmp_path: Path) -> None:
    env = {**os.environ, "DOPE_TRACEMALLOC": str(tmp_path), "DOPE_TRACEMALLOC_EVERY_S": "0.2",
           "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)
    snaps = sorted(tmp_path.glob("leaky-*.snap"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert len(snaps) >= 3
    first = top_growth(snaps[0], snaps[-1], top=1)[0]
    assert "<string>:7" in first and float(first.split()[0]) > 3.0, first
    assert main([str(snaps[0]), str(snaps[-1]), "--top", "2"]) == 0


def test_without_the_variable_nothing_is_traced() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOPE_TRACEMALLOC"}
    code = ("import tracemalloc; from dope.memtrace import start_from_env; "
            "assert start_from_env('x') is None and not tracemalloc.is_tracing()")
    subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO / "src")}, check=True,
                   timeout=60)
