"""Faults a fake Binance injects on demand: a small, deterministic (seeded) plan the test configures.

Websocket faults are per connection: the n-th connection gets ``streams[n]`` (then ``default``).
Message counts are counts of trade messages sent on that connection. REST faults answer the next
matching REST calls, in order.

>>> plan = FaultPlan(seed=1, streams=[StreamFaults(drop_after=100)])
>>> plan.fail_next_rest(429, retry_after=1)
>>> plan.for_connection(0).drop_after, plan.for_connection(1).drop_after
(100, None)
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

MalformedKind = Literal["garbage", "bad_json", "wrong_types", "unknown_event"]

MALFORMED_FRAMES: dict[str, str] = {
    "garbage": "\x00\x01 this is not json at all",
    "bad_json": '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,',
    "wrong_types": '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":"soon","s":"BTCUSDT","a":"x",'
                   '"p":"1.0","q":"1.0","f":1,"l":1,"T":1,"m":"maybe","M":true}}',
    "unknown_event": '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}',
}
"""Malformed frames by kind: text the client must count, log and skip."""

WAF_HTML = ("<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\"><HTML><HEAD><TITLE>ERROR: The "
            "request could not be satisfied</TITLE></HEAD><BODY><H1>403 ERROR</H1><H2>The request could not be "
            "satisfied.</H2></BODY></HTML>")
"""An HTML page as the CDN/WAF in front of Binance answers (with 403, or a proxy with 200/502)."""


@dataclass
class StreamFaults:
    """Faults of one websocket connection (None = never)."""

    drop_after: int | None = None
    """Abort the TCP connection (no close frame) after this many messages."""
    close_after: int | None = None
    """Close the connection cleanly (close frame) after this many messages."""
    stall_after: int | None = None
    """Stop sending anything (trades and pings) for ``stall_s`` after this many messages."""
    stall_s: float = 0.0
    shutdown_after: int | None = None
    """Send ``serverShutdown`` then close after this many messages."""
    malformed: dict[int, MalformedKind] = field(default_factory=dict)
    """Send a malformed frame of the given kind after this many messages."""
    poisoned: dict[int, str] = field(default_factory=dict)
    """Before the n-th message (1-based), send a copy of it whose price is the given text ("NaN", "0", ...):
    a frame the client must reject without taking its trade id, which the genuine message then carries."""
    lose: set[int] = field(default_factory=set)
    """Silently skip the n-th message (1-based) without disconnecting: a hole only REST can fill."""
    duplicate_rate: float = 0.0
    """Probability that a message is sent twice."""
    reorder_window: int = 0
    """Shuffle messages within chunks of this many (0/1 = in order)."""
    ignore_pongs: bool = False
    """Behave as if no pong ever arrived (the connection is closed at the pong timeout)."""


@dataclass(frozen=True)
class RestFault:
    """An error answer for the next REST call whose path starts with ``path`` ("" = any)."""

    status: int
    retry_after: int | None = None
    path: str = ""
    code: int = -1003
    msg: str = ""
    body: str | None = None
    """Answer this text (an HTML page, as a WAF or proxy sends) instead of Binance's JSON error."""


@dataclass(frozen=True)
class OrderFault:
    """What happens to the next order the fake's order desk accepts (``OrderDesk.inject``).

    * ``error``: it executes, but the answer is HTTP ``status`` with ``code`` (the client cannot know);
    * ``lose``: it executes, and the connection is cut before any answer;
    * ``delay``: it executes, and the answer comes ``delay_s`` real seconds later (past a client's timeout);
    * ``late``: it is answered ``-1007`` at once and reaches the book ``late_ms`` later on the exchange clock
      (a query before then says ``-2013``).
    """

    kind: Literal["error", "lose", "delay", "late"]
    status: int = 503
    code: int = -1007
    delay_s: float = 0.0
    late_ms: int = 0


class ResponseFault(Exception):
    """Raised by a fake handler: answer ``status``/``body`` after ``delay_s`` real seconds, or cut the
    connection instead (``drop``)."""

    def __init__(self, status: int, body: Any, *, delay_s: float = 0.0, drop: bool = False) -> None:
        super().__init__("response fault")
        self.status, self.body, self.delay_s, self.drop = status, body, delay_s, drop


@dataclass
class FaultPlan:
    """What goes wrong, and when. ``seed`` makes duplicates and reordering deterministic."""

    seed: int = 0
    streams: list[StreamFaults] = field(default_factory=list)
    default: StreamFaults = field(default_factory=StreamFaults)
    rest: deque[RestFault] = field(default_factory=deque)

    def for_connection(self, index: int) -> StreamFaults:
        """Faults of the ``index``-th websocket connection (0-based)."""
        return self.streams[index] if index < len(self.streams) else self.default

    def rng(self, index: int) -> random.Random:
        """The random generator of one connection (seeded by plan seed and connection index)."""
        return random.Random(self.seed * 1_000_003 + index)

    def fail_next_rest(self, status: int, *, retry_after: int | None = None, path: str = "",
                       code: int | None = None, msg: str = "", body: str | None = None) -> None:
        """Answer the next REST call (matching ``path``) with HTTP ``status`` (and ``body``, if given)."""
        self.rest.append(RestFault(status, retry_after, path, _default_code(status) if code is None else code, msg,
                                   body))

    def take_rest_fault(self, path: str) -> RestFault | None:
        """Remove and return the first queued REST fault that matches ``path``."""
        for fault in self.rest:
            if path.startswith(fault.path):
                self.rest.remove(fault)
                return fault
        return None


def _default_code(status: int) -> int:
    if status in (429, 418):
        return -1003
    if status >= 500:
        return -1008
    return -1000
