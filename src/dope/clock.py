"""Clocks: core code asks a Clock for the time and never reads the wall clock itself.

``LiveClock`` is the real time; ``SimulatedClock`` moves only when told to,
so tests and backtests are deterministic.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Epoch milliseconds (UTC) now, and a way to wait until a later time."""

    def now_ms(self) -> int: ...

    async def sleep_until(self, time_ms: int) -> None: ...


class LiveClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, time_ms: int) -> None:
        delay = (time_ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)


class SimulatedClock:
    """A clock that jumps: ``sleep_until`` moves it forward at once.

    >>> clock = SimulatedClock(1_000)
    >>> clock.advance_to(5_000); clock.now_ms()
    5000
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance_to(self, time_ms: int) -> None:
        """Move forward to ``time_ms`` (never backwards)."""
        self._now = max(self._now, time_ms)

    async def sleep_until(self, time_ms: int) -> None:
        self.advance_to(time_ms)
        await asyncio.sleep(0)


class ScaledClock:
    """Replay time: runs ``speed`` times faster than real time from a start point in the past."""

    def __init__(self, start_ms: int, speed: float, wall: Clock | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._wall = wall or LiveClock()
        self._origin_wall = self._wall.now_ms()
        self._origin = start_ms
        self._speed = speed

    def now_ms(self) -> int:
        return self._origin + int((self._wall.now_ms() - self._origin_wall) * self._speed)

    async def sleep_until(self, time_ms: int) -> None:
        wall_target = self._origin_wall + (time_ms - self._origin) / self._speed
        await self._wall.sleep_until(int(wall_target))
