"""Context bars aligned by open time online, as the offline path aligns them, whatever the arrival order.

A symbol's bar is held until every context symbol has shown its bar of the same open time, or has
moved past it (a bar of a later open time: it has none for this one), or the deadline passed: a
bar ``wait_bars`` intervals newer arrived (of any symbol; event time), or the featurizer was told
to give up (``release_all``, e.g. after a quiet bus). A context bar that missed its deadline is
missing (its last close carried), exactly as offline where a symbol has no bar; it is counted in
``context_timeouts``.

>>> from dope.market.synthetic import generate_bars
>>> from dope.bars import bars_from_frame
>>> frames = generate_bars(["A", "B"], 0, 30_000, 10_000)
>>> a, b = (bars_from_frame(frames[s], 10_000) for s in "AB")
>>> aligner = ContextAligner(["A", "B"], ("B",), 10_000)
>>> aligner.add(a[0]), [(bar.symbol, sorted(ctx)) for bar, ctx in aligner.add(b[0])]
([], [('A', ['B']), ('B', ['B'])])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from dope.messages import Bar

Released = tuple[Bar, dict[str, Bar]]
_NEVER = -(2**62)


class ContextAligner:
    """Holds each symbol's bars until their context bars of the same open time are in (or overdue)."""

    def __init__(self, symbols: Sequence[str], context_symbols: Sequence[str], interval_ms: int,
                 wait_bars: int = 1) -> None:
        self.context_symbols = tuple(context_symbols)
        self.wait_ms = max(1, wait_bars) * interval_ms
        self.pending: dict[str, deque[Bar]] = {s: deque() for s in sorted(symbols)}
        self.recent: dict[str, dict[int, Bar]] = {s: {} for s in self.context_symbols}
        self.newest: dict[str, int] = {}
        self.watermark = _NEVER
        self.context_timeouts = 0

    def add(self, bar: Bar) -> list[Released]:
        """Take ``bar`` in; return the bars (with their context bars) that are now complete, in order."""
        self.newest[bar.symbol] = max(self.newest.get(bar.symbol, _NEVER), bar.open_time)
        self.watermark = max(self.watermark, bar.open_time)
        if bar.symbol in self.recent:
            self.recent[bar.symbol][bar.open_time] = bar
        if bar.symbol in self.pending:
            self.pending[bar.symbol].append(bar)
        return self._release(force=False)

    def release_all(self) -> list[Released]:
        """Give up waiting: every held bar, its missing context bars counted as timed out."""
        return self._release(force=True)

    def held(self) -> int:
        """How many bars wait for their context."""
        return sum(len(q) for q in self.pending.values())

    def _release(self, *, force: bool) -> list[Released]:
        out: list[Released] = []
        for queue in self.pending.values():
            while queue and (force or self._complete(queue[0])):
                bar = queue.popleft()
                out.append((bar, self._context(bar)))
        self._forget()
        return out

    def _complete(self, bar: Bar) -> bool:
        """Whether every context symbol has answered for ``bar``'s open time, or the deadline passed."""
        t = bar.open_time
        waiting = [s for s in self.context_symbols
                   if t not in self.recent[s] and self.newest.get(s, _NEVER) <= t and s != bar.symbol]
        return not waiting or self.watermark - t >= self.wait_ms

    def _context(self, bar: Bar) -> dict[str, Bar]:
        t = bar.open_time
        context = {s: self.recent[s][t] for s in self.context_symbols if t in self.recent[s]}
        if bar.symbol in self.recent:
            context[bar.symbol] = bar
        self.context_timeouts += sum(1 for s in self.context_symbols
                                     if s not in context and self.newest.get(s, _NEVER) <= t)
        return context

    def _forget(self) -> None:
        """Drop context bars older than every held bar and the deadline window."""
        oldest = min((q[0].open_time for q in self.pending.values() if q), default=self.watermark)
        horizon = min(oldest, self.watermark - self.wait_ms)
        for bars in self.recent.values():
            for t in [t for t in bars if t < horizon]:
                del bars[t]
