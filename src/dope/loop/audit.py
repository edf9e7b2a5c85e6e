"""The audit log of model decisions: an append-only JSON-lines file, one line per decision.

Every registration, shadow deployment, promotion, rejection, rollback and retirement is appended as one
line and fsynced before ``append`` returns; earlier lines are never rewritten. A writer killed mid-append
can leave a torn last line (no newline): readers skip it with a warning unless it is a whole entry, and the
next ``append`` first repairs it (a whole entry gets its newline, anything else is cut off by truncation
to the end of the last whole line), so readers and writers agree on what the log holds.
Appends from several processes are serialised by an advisory lock beside the file.

>>> import tempfile, pathlib
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> log.append(AuditEntry(time_ms=1, action="register", model_id="ridge-1", reason="scheduled retrain"))
>>> [e.action for e in log.read()]
['register']
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final, Literal, get_args

import msgspec

from dope.errors import UserError
from dope.fileio import exclusive_lock, fsync_folder
from dope.loop.gate import GateDecision

Action = Literal["register", "shadow", "promote", "reject", "rollback", "retire"]
ACTIONS: Final[tuple[str, ...]] = get_args(Action)
AUDIT_FILE: Final = "audit.jsonl"
"""The log's name under the registry root."""
log = logging.getLogger(__name__)


class AuditLogError(UserError, ValueError):
    """A line of the log other than the last is not an entry (not something a crash leaves)."""


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """One decision about a model and its evidence (the gate's figures for ``promote``/``reject``/``rollback``)."""

    time_ms: int
    """Market time of the decision."""
    action: Action
    model_id: str
    reason: str
    from_role: str = ""
    to_role: str = ""
    statistic: float | None = None
    p_value: float | None = None
    n_bars: int | None = None
    threshold: float | None = None
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    """Anything else the decision rests on (lineage of a registration, the champion tested against...)."""


def gate_entry(time_ms: int, action: Action, model_id: str, decision: GateDecision, *, from_role: str = "",
               to_role: str = "", evidence: dict[str, Any] | None = None) -> AuditEntry:
    """An entry for a decision taken on a gate test, carrying the test's figures."""
    extra = {"lag": decision.lag, "n_candidates": decision.n_candidates,
             "mean_loss_diff": decision.mean_loss_diff, "pnl_diff": decision.pnl_diff, **(evidence or {})}
    return AuditEntry(time_ms=time_ms, action=action, model_id=model_id, reason=decision.reason,
                      from_role=from_role, to_role=to_role, statistic=_finite(decision.statistic),
                      p_value=decision.p_value, n_bars=decision.n_bars, threshold=decision.threshold,
                      evidence=extra)


class AuditLog:
    """The append-only log at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = self.path.with_name(f".{self.path.name}.lock")

    def append(self, entry: AuditEntry) -> None:
        """Write ``entry`` as one line and make it durable before returning."""
        line = msgspec.json.encode(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self._lock):
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                _repair_tail(fd, self.path)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_folder(self.path.parent)

    def read(self) -> list[AuditEntry]:
        """Every whole entry, oldest first; a torn last line is skipped with a warning, a bad earlier one is
        an error (it cannot come from a crash)."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        entries = []
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)
            if not raw.strip():
                continue
            try:
                entries.append(msgspec.json.decode(raw, type=AuditEntry))
            except msgspec.DecodeError as exc:
                if last:
                    log.warning("%s: ignoring a torn last line (a writer died mid-append): %s", self.path, exc)
                    continue
                raise AuditLogError(f"{self.path} line {number} is not a valid audit entry: {exc}") from None
        return entries


def rejections_since_promotion(entries: list[AuditEntry]) -> int:
    """Candidates rejected by the gate since the last promotion: the gate's ``n_candidates`` for the next
    candidate is this plus one."""
    count = 0
    for entry in entries:
        if entry.action == "promote":
            count = 0
        elif entry.action == "reject":
            count += 1
    return count


def _repair_tail(fd: int, path: Path) -> None:
    """End a last line left without its newline (by a writer killed mid-append): a whole entry gets its
    newline, a torn one is truncated away."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = _end_of_last_line(fd, size)
    try:
        msgspec.json.decode(os.pread(fd, size - keep, keep), type=AuditEntry)
    except msgspec.DecodeError:
        log.warning("%s: cutting a torn last line of %d bytes (a writer died mid-append)", path, size - keep)
        os.ftruncate(fd, keep)
    else:
        os.write(fd, b"\n")


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _finite(value: float) -> float | None:
    """JSON has no infinity: a degenerate statistic is stored as null."""
    return value if value == value and abs(value) != float("inf") else None


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as a plain JSON object."""
    return msgspec.to_builtins(entry)  # type: ignore[no-any-return]
