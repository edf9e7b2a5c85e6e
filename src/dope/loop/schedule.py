"""When the loop acts, in market time: checkpoints on a grid, retrains every ``retrain_every`` or on request.

Checkpoints are the multiples of ``step_ms`` (``checkpoint_bars`` bars) and the retrain points, the
multiples of ``retrain_every`` (both counted from the epoch, so a restart finds the same ones). At a
checkpoint the trainer settles its ledger, runs the gate when a candidate has enough paired bars, and fits
when a retrain is due. An early retrain (a drift alarm: :meth:`Schedule.request_retrain`) is due at the next
checkpoint one step (``step_ms``) or more after the alarm, at most one per ``min_retrain_gap`` of market
time: the alarm comes from another service (the decoy), and a step later it has normally long reached the
trainer, so a replay fits at the same checkpoint every run (the trainer does not wait for the decoy).

>>> s = Schedule(step_ms=500, every_ms=3_600, gap_ms=1_000)
>>> s.start(100); s.next_point(100), s.next_retrain_ms
(500, 3600)
>>> s.next_point(3_400), s.retrain_due(3_600)
(3500, True)
"""

from __future__ import annotations

from dataclasses import dataclass


def next_multiple(after_ms: int, every_ms: int) -> int:
    """The first multiple of ``every_ms`` strictly after ``after_ms``."""
    return (after_ms // every_ms + 1) * every_ms


def checkpoint_bars(min_bars: int) -> int:
    """Bars between checkpoints: ``max(50, min_bars // 5)``."""
    return max(50, min_bars // 5)


@dataclass
class Schedule:
    """The checkpoint grid, the next scheduled retrain and any early request."""

    step_ms: int
    every_ms: int
    gap_ms: int
    next_retrain_ms: int | None = None
    last_retrain_ms: int | None = None
    requested: str = ""
    requested_from_ms: int = 0
    ignored_requests: int = 0

    def start(self, time_ms: int, last_retrain_ms: int | None = None) -> None:
        """Begin at ``time_ms`` (the first bar seen), or after ``last_retrain_ms`` (a restart's audit log)."""
        if self.next_retrain_ms is None:
            self.last_retrain_ms = last_retrain_ms
            self.next_retrain_ms = next_multiple(time_ms if last_retrain_ms is None else last_retrain_ms,
                                                 self.every_ms)

    def next_point(self, after_ms: int) -> int:
        """The next checkpoint strictly after ``after_ms`` (a grid point or the next retrain point)."""
        grid = next_multiple(after_ms, self.step_ms)
        if self.next_retrain_ms is not None and after_ms < self.next_retrain_ms < grid:
            return self.next_retrain_ms
        return grid

    def retrain_due(self, time_ms: int) -> bool:
        """Whether the checkpoint at ``time_ms`` must fit: a retrain point passed, or one was requested."""
        scheduled = self.next_retrain_ms is not None and time_ms >= self.next_retrain_ms
        return scheduled or (bool(self.requested) and time_ms >= self.requested_from_ms)

    def retrained(self, time_ms: int) -> str:
        """A retrain began at ``time_ms``: schedule the next one; return why this one ran."""
        why = self.requested or "scheduled retrain"
        self.requested = ""
        self.last_retrain_ms = time_ms
        self.next_retrain_ms = next_multiple(time_ms, self.every_ms)
        return why

    def request_retrain(self, reason: str, time_ms: int) -> bool:
        """Ask for an early retrain (a drift alarm at market time ``time_ms``), due at the first checkpoint
        ``step_ms`` or more later; False when the last one is younger than ``gap_ms`` (counted in
        ``ignored_requests``)."""
        if self.last_retrain_ms is not None and time_ms - self.last_retrain_ms < self.gap_ms:
            self.ignored_requests += 1
            return False
        if not self.requested:
            self.requested, self.requested_from_ms = reason, time_ms + self.step_ms
        return True
