"""Bar intervals: ``"10s"`` <-> milliseconds, and UTC alignment of times to them."""

from __future__ import annotations

import re
from typing import Final

MIN_INTERVAL_MS: Final = 1_000
MAX_INTERVAL_MS: Final = 86_400_000
_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN: Final = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_interval(text: str) -> int:
    """Parse an interval such as ``"10s"``, ``"15m"``, ``"1h"`` or ``"1d"`` into milliseconds.

    >>> parse_interval("10s"), parse_interval("15m")
    (10000, 900000)
    """
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"bad interval {text!r}: expected a number and a unit (s, m, h, d), e.g. '10s'")
    interval_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    check_interval_ms(interval_ms)
    return interval_ms


def check_interval_ms(interval_ms: int) -> int:
    """Return ``interval_ms`` if it is a whole number of seconds between 1 s and 1 d, else raise."""
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS or interval_ms % 1000:
        raise ValueError(f"bar interval {interval_ms} ms is outside 1s..1d or not whole seconds")
    return interval_ms


def format_interval(interval_ms: int) -> str:
    """The shortest name of an interval: ``format_interval(900_000) == "15m"``."""
    for unit in ("d", "h", "m", "s"):
        if interval_ms % _UNIT_MS[unit] == 0:
            return f"{interval_ms // _UNIT_MS[unit]}{unit}"
    return f"{interval_ms}ms"


def align(time_ms: int, interval_ms: int) -> int:
    """Open time of the UTC-aligned window that holds ``time_ms``."""
    return time_ms - time_ms % interval_ms
