"""The audit log: append/read round trip, a torn last line, a SIGKILLed writer, `dope models history`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dope.cli import main
from dope.loop.audit import (
    AUDIT_FILE,
    AuditEntry,
    AuditLog,
    AuditLogError,
    gate_entry,
    rejections_since_promotion,
)
from dope.loop.gate import promotion_test

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def _decision() -> object:
    rng = np.random.default_rng(1)
    champion = rng.normal(0.0, 1.0, 600)
    zeros = np.zeros(600)
    return promotion_test(0.7 * champion, champion, zeros, zeros, n_candidates=3)


def test_round_trip_keeps_every_field_in_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / AUDIT_FILE)
    assert log.read() == []
    first = AuditEntry(time_ms=T0, action="register", model_id="ridge-a", reason="scheduled retrain",
                       to_role="", evidence={"rows": 259200, "data_sha256": "ab" * 32})
    decision = _decision()
    second = gate_entry(T0 + 10_000, "promote", "ridge-a", decision, from_role="shadow",  # type: ignore[arg-type]
                        to_role="champion", evidence={"champion": "ridge-0"})
    log.append(first)
    log.append(second)
    back = log.read()
    assert back == [first, second]
    assert back[1].p_value == decision.p_value and back[1].n_bars == 600  # type: ignore[attr-defined]
    assert back[1].threshold == pytest.approx(0.05 / 3)
    assert back[1].evidence["champion"] == "ridge-0" and back[1].evidence["n_candidates"] == 3
    with pytest.raises(TypeError):
        AuditEntry(time_ms=T0, action="promote", model_id="x")  # type: ignore[call-arg]  # reason is required


def test_a_torn_last_line_is_ignored_then_cut_and_earlier_lines_are_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / AUDIT_FILE
    log = AuditLog(path)
    log.append(AuditEntry(time_ms=T0, action="shadow", model_id="m1", reason="new version", to_role="shadow"))
    before = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(b'{"time_ms": 5, "action": "prom')  # what a writer killed mid-append leaves
    with caplog.at_level(logging.WARNING, logger="dope.loop.audit"):
        assert [e.model_id for e in log.read()] == ["m1"]
    assert "torn last line" in caplog.text
    log.append(AuditEntry(time_ms=T0 + 1, action="reject", model_id="m2", reason="not significant"))
    assert path.read_bytes().startswith(before)  # earlier lines untouched
    assert [e.model_id for e in log.read()] == ["m1", "m2"]


def test_a_whole_last_entry_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    path.write_bytes(b'{"time_ms":1,"action":"retire","model_id":"m1","reason":"lost"}')  # killed before "\n"
    log = AuditLog(path)
    assert [e.model_id for e in log.read()] == ["m1"]
    log.append(AuditEntry(time_ms=2, action="retire", model_id="m2", reason="lost"))
    assert [e.model_id for e in log.read()] == ["m1", "m2"]  # the reader and the next writer agree


def test_a_corrupt_earlier_line_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / AUDIT_FILE
    path.write_bytes(b'{"nonsense": 1}\n' + b'{"time_ms":1,"action":"retire","model_id":"m","reason":"lost"}\n')
    with pytest.raises(AuditLogError, match="line 1 is not a valid audit entry"):
        AuditLog(path).read()
    assert main(["models", "history", "--registry", str(tmp_path)]) != 0  # one clear line, no traceback
    assert "line 1 is not a valid audit entry" in capsys.readouterr().err


WRITER = """
import sys
from dope.loop.audit import AuditEntry, AuditLog
log = AuditLog(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    log.append(AuditEntry(time_ms=i, action="register", model_id=f"m{i}", reason="x" * 5000,
                          evidence={"i": i, "pad": "y" * 20000}))
    i += 1
"""


def test_a_sigkilled_writer_leaves_a_readable_log(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    for _ in range(3):
        start = path.stat().st_size if path.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while (not path.exists() or path.stat().st_size < start + 200_000) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        entries = AuditLog(path).read()  # never raises: at most the last line is torn
        assert entries and all(e.evidence["pad"] == "y" * 20000 for e in entries)
    ids = [e.evidence["i"] for e in AuditLog(path).read()]
    assert ids.count(0) == 3  # three writers, each one's lines whole and in order
    AuditLog(path).append(AuditEntry(time_ms=1, action="retire", model_id="after", reason="lost"))
    assert AuditLog(path).read()[-1].model_id == "after"


def _logged_registry(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / AUDIT_FILE)
    log.append(AuditEntry(time_ms=T0, action="register", model_id="ridge-20260101T0000-aaaaaa",
                          reason="scheduled retrain"))
    log.append(gate_entry(T0 + 3_600_000, "promote", "ridge-20260101T0000-aaaaaa", _decision(),  # type: ignore[arg-type]
                          from_role="shadow", to_role="champion"))
    return tmp_path


def test_history_json_is_a_list_of_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _logged_registry(tmp_path)
    assert main(["models", "history", "--json", "--registry", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in out] == ["register", "promote"]
    keys = {"time_ms", "action", "model_id", "from_role", "to_role", "reason", "statistic", "p_value", "n_bars",
            "threshold"}
    assert all(keys <= set(e) for e in out)
    assert out[0]["statistic"] is None and out[1]["n_bars"] == 600 and out[1]["to_role"] == "champion"
    assert out[1]["time_ms"] == T0 + 3_600_000


def test_history_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _logged_registry(tmp_path)
    assert main(["models", "history", "--registry", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["market", "time", "(UTC)", "action"]
    assert lines[1].startswith("2026-01-01 00:00:00  register ridge-20260101T0000-aaaaaa")
    assert "shadow -> champion" in lines[2] and lines[2].rstrip().endswith("passed")
    assert " 600 " in lines[2] and "0.0167" in lines[2]
    assert main(["models", "history", "--registry", str(tmp_path / "empty")]) == 0
    assert "no decisions logged" in capsys.readouterr().out


def test_an_infinite_statistic_is_logged_as_null(tmp_path: Path) -> None:
    ones, zeros = np.ones(600), np.zeros(600)
    decision = promotion_test(zeros, ones, zeros, zeros)  # the candidate is exact on every bar: d = 1 always
    assert decision.passed and decision.statistic == float("inf") and decision.p_value == 0.0
    log = AuditLog(tmp_path / AUDIT_FILE)
    log.append(gate_entry(T0, "promote", "m", decision, from_role="shadow", to_role="champion"))
    assert log.read()[0].statistic is None and log.read()[0].p_value == 0.0


def test_rejections_since_the_last_promotion_count_the_candidates_tried() -> None:
    def entry(action: str) -> AuditEntry:
        return AuditEntry(time_ms=0, action=action, model_id="m", reason="")  # type: ignore[arg-type]

    assert rejections_since_promotion([]) == 0
    log = [entry(a) for a in ("register", "reject", "reject", "promote", "register", "shadow", "reject")]
    assert rejections_since_promotion(log) == 1
    assert rejections_since_promotion(log[:3]) == 2
