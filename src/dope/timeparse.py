"""Times and durations typed by people: ``2024-01-01``, ``1723161250000``, ``365d``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from dope.errors import UserError

_DURATION: Final = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str) -> int:
    """Epoch milliseconds from digits (already ms) or an ISO 8601 date/time (UTC unless it says otherwise).

    >>> parse_time("2024-01-01"), parse_time("1723161250000")
    (1704067200000, 1723161250000)
    """
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"bad time {text!r}: expected epoch ms or an ISO date such as 2024-01-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso_of(time_ms: int) -> str:
    """The UTC ISO 8601 form of epoch milliseconds (the inverse of :func:`parse_time`).

    >>> iso_of(1723161250500)
    '2024-08-08T23:54:10.500Z'
    """
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_duration(text: str) -> int:
    """Milliseconds from ``"365d"`` (units s, m, h, d, w).

    >>> parse_duration("10m")
    600000
    """
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise UserError(f"bad duration {text!r}: expected a positive number and a unit (s, m, h, d, w)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]
