"""SIGKILL the collector during a replay, restart it: the store equals an uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dope.store import BarStore

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def collect_command(store: Path, speed: float) -> list[str]:
    return [sys.executable, "-m", "dope.cli", "collect", "--source", "replay", "--store", str(store),
            "--speed", str(speed), "--no-bus", "--print", "--symbols", *SYMBOLS]


def environment() -> dict[str, str]:
    return {**os.environ, "DOPE_COLLECTOR__FLUSH_EVERY_BARS": "4", "DOPE_BARS__CLOSE_ON": "event_time"}


def run_to_end(store: Path) -> None:
    subprocess.run(collect_command(store, 0), env=environment(), check=True, capture_output=True, timeout=120)


def kill_after_bars(store: Path, bars: int) -> None:
    """Start a paced replay, SIGKILL it once it has printed ``bars`` bars."""
    process = subprocess.Popen(collect_command(store, 150), env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    seen = 0
    while seen < bars and time.monotonic() < deadline:
        if process.stdout.readline():
            seen += 1
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert seen == bars, "the collector stopped printing bars before the kill"
    assert process.returncode == -signal.SIGKILL


def store_frames(store: Path) -> dict[str, pd.DataFrame]:
    return {symbol: BarStore(store).read_bars(symbol, 10_000) for symbol in SYMBOLS}


@pytest.mark.parametrize("seed", [1, 2])
def test_killed_and_restarted_collector_ends_with_the_uninterrupted_bars(tmp_path: Path, seed: int) -> None:
    run_to_end(tmp_path / "reference")
    kill_after_bars(tmp_path / "killed", random.Random(seed).randint(45, 110))  # past the first store write (at most one a second for a replay)
    partial = store_frames(tmp_path / "killed")
    run_to_end(tmp_path / "killed")
    reference, restored = store_frames(tmp_path / "reference"), store_frames(tmp_path / "killed")
    assert 0 < sum(len(f) for f in partial.values()) < sum(len(f) for f in reference.values())
    for symbol in SYMBOLS:
        assert len(reference[symbol]) > 60
        pd.testing.assert_frame_equal(restored[symbol], reference[symbol], check_exact=True)


def test_sigterm_stores_every_bar_the_collector_printed(tmp_path: Path) -> None:
    """SIGTERM mid-replay, with no flush due yet: every bar already out is in the store."""
    env = {**environment(), "DOPE_COLLECTOR__FLUSH_EVERY_BARS": "100000"}
    process = subprocess.Popen(collect_command(tmp_path, 150), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    printed: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    while len(printed) < 30 and time.monotonic() < deadline and (line := process.stdout.readline()):
        day, clock, symbol = line.split()[:3]
        printed.append((symbol, f"{day} {clock}"))
    process.send_signal(signal.SIGTERM)
    printed.extend((line.split()[2], " ".join(line.split()[:2])) for line in process.stdout if line.strip())
    assert process.wait(timeout=20) == 0
    stored = [(symbol, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t / 1000)))
              for symbol, frame in store_frames(tmp_path).items() for t in frame["open_time"]]
    assert len(printed) >= 30 and sorted(stored) == sorted(printed)
