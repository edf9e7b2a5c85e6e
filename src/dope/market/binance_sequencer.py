"""Per-symbol ordering of trades by id: de-duplicates, reorders, and reports gaps to backfill.

>>> from dope.messages import Trade
>>> def t(i: int) -> Trade:
...     return Trade(symbol="X", event_time=i, trade_id=i, price=1.0, qty=1.0, is_buyer_maker=False)
>>> seq = Sequencer(next_id=1)
>>> out: list[Trade] = []
>>> seq.offer(t(2), out, 0); seq.offer(t(1), out, 0); seq.offer(t(1), out, 0)
>>> [x.trade_id for x in out], seq.duplicates, seq.out_of_order
([1, 2], 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dope.messages import Trade


@dataclass
class Sequencer:
    """Releases the trades of one symbol in increasing, contiguous id order.

    ``next_id`` is the next id to release (None: take the first trade offered). A trade with a
    smaller id, or one already held, is a duplicate. A trade past ``next_id`` is held until the ids
    before it arrive; ``gap_since`` says since when (loop time, s) something is held. Trades older
    than ``min_time`` advance the sequence but are not released (they precede the resume point).
    """

    next_id: int | None = None
    min_time: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    gap_since: float | None = None
    _held: dict[int, Trade] = field(default_factory=dict)

    def offer(self, trade: Trade, out: list[Trade], now: float) -> None:
        """Take a trade; append every trade now releasable to ``out``."""
        tid = trade.trade_id
        if self.next_id is None:
            self.next_id = tid
        if tid < self.next_id or tid in self._held:
            self.duplicates += 1
            return
        if tid > self.next_id:
            self._held[tid] = trade
            self.out_of_order += 1
            self.gap_since = self.gap_since if self.gap_since is not None else now
            return
        self._release(trade, out)
        self._drain(out, now)

    def _release(self, trade: Trade, out: list[Trade]) -> None:
        if trade.event_time >= self.min_time:
            out.append(trade)
        self.next_id = trade.trade_id + 1

    def _drain(self, out: list[Trade], now: float) -> None:
        held = self._held
        while held and self.next_id in held:
            self._release(held.pop(self.next_id), out)
        self.gap_since = (now if self.gap_since is not None else None) if held else None

    @property
    def held(self) -> int:
        """Number of trades waiting for an earlier id."""
        return len(self._held)

    def skip_to(self, trade_id: int, out: list[Trade], now: float) -> int:
        """Give up on ids before ``trade_id`` (they cannot be recovered); returns how many were skipped."""
        assert self.next_id is not None
        skipped = max(0, trade_id - self.next_id)
        self.next_id = max(self.next_id, trade_id)
        for tid in [i for i in self._held if i < self.next_id]:
            del self._held[tid]
        self._drain(out, now)
        return skipped
