"""Incremental (live) trade -> bar aggregation for one symbol.

Windows are event-time tumbling windows ``[open_time, open_time + interval)``
aligned to UTC multiples of the interval. A window is closed once the
watermark (the newest trade time seen, or the clock via ``advance``) passes
its end plus the grace period. A trade for a window already closed is *late*:
it is not folded into the published bar, but it is counted and reported to the
``on_late`` callback, never dropped silently.

Open and close are the first and last trade by ``(time, trade id)``, so trades
reordered within the grace period give the same bar as trades in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dope.bars.interval import check_interval_ms
from dope.messages import Bar, Trade

LateHandler = Callable[[Trade, int], None]
"""Called with a late trade and the open time of the earliest window still open."""


@dataclass(slots=True)
class _Window:
    """Running values of the trades of one window (sums in arrival order).

    Open and close are tracked by ``(time, trade id)``, so arrival order does
    not change them. Written flat, with no helper calls: this is the live hot path.
    """

    open_time: int
    open_id: int
    close_time: int
    close_id: int
    open: float
    close: float
    high: float
    low: float
    first_trade_id: int
    last_trade_id: int
    volume: float = 0.0
    quote_volume: float = 0.0
    count: int = 0
    taker_buy_volume: float = 0.0
    taker_buy_quote_volume: float = 0.0

    @classmethod
    def start(cls, trade: Trade) -> _Window:
        t, tid, price = trade.event_time, trade.trade_id, trade.price
        window = cls(t, tid, t, tid, price, price, price, price, trade.raw_first_id, trade.raw_last_id)
        window.add(trade)
        return window

    def add(self, trade: Trade) -> None:
        """Fold one trade into the window."""
        t, tid, price, qty = trade.event_time, trade.trade_id, trade.price, trade.qty
        if t > self.close_time or (t == self.close_time and tid > self.close_id):
            self.close_time, self.close_id, self.close = t, tid, price
        elif t < self.open_time or (t == self.open_time and tid < self.open_id):
            self.open_time, self.open_id, self.open = t, tid, price
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        first, last = trade.first_trade_id, trade.last_trade_id
        if first < 0:
            first = last = tid
        if first < self.first_trade_id:
            self.first_trade_id = first
        if last > self.last_trade_id:
            self.last_trade_id = last
        quote = price * qty
        self.volume += qty
        self.quote_volume += quote
        self.count += last - first + 1
        if not trade.is_buyer_maker:
            self.taker_buy_volume += qty
            self.taker_buy_quote_volume += quote


@dataclass
class BarBuilder:
    """Builds the bars of one symbol from its trades, one trade at a time.

    >>> b = BarBuilder("BTCUSDT", 10_000)
    >>> b.add(Trade(symbol="BTCUSDT", event_time=1_000, trade_id=1, price=10.0, qty=1.0, is_buyer_maker=False))
    []
    >>> [bar.close for bar in b.add(Trade(symbol="BTCUSDT", event_time=12_000, trade_id=2, price=11.0,
    ...                                      qty=1.0, is_buyer_maker=True))]
    [10.0]
    """

    symbol: str
    interval_ms: int
    grace_ms: int = 0
    emit_empty: bool = True
    next_open_time: int | None = None
    """Open time of the earliest window not yet emitted (None: the first trade's window)."""
    last_close: float | None = None
    """Close of the last emitted bar: the price carried by empty bars."""
    on_late: LateHandler | None = None
    late_trades: int = 0
    late_volume: float = 0.0
    watermark: int = -1
    _windows: dict[int, _Window] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_interval_ms(self.interval_ms)
        if self.grace_ms < 0:
            raise ValueError(f"grace_ms must be >= 0, got {self.grace_ms}")

    def add(self, trade: Trade) -> list[Bar]:
        """Fold a trade in; return the bars its time closes (oldest first)."""
        t = trade.event_time
        open_time = t - t % self.interval_ms
        if self.next_open_time is None:
            self.next_open_time = open_time
        elif open_time < self.next_open_time:
            self._late(trade)
            return []
        window = self._windows.get(open_time)
        if window is None:
            self._windows[open_time] = _Window.start(trade)
        else:
            window.add(trade)
        if t < self.next_open_time + self.interval_ms + self.grace_ms:
            if t > self.watermark:
                self.watermark = t
            return []
        return self.advance(t)

    def advance(self, now_ms: int) -> list[Bar]:
        """Move the watermark to ``now_ms``; return every bar whose window (plus grace) has passed."""
        self.watermark = max(self.watermark, now_ms)
        bars: list[Bar] = []
        while self.next_open_time is not None and self._is_closed(self.next_open_time):
            bars.extend(self._emit(self.next_open_time))
        return bars

    def flush(self) -> list[Bar]:
        """Emit every window still open (end of a finite stream)."""
        bars: list[Bar] = []
        if self._windows:
            last_open = max(self._windows)
            while self.next_open_time is not None and self.next_open_time <= last_open:
                bars.extend(self._emit(self.next_open_time))
        return bars

    def _is_closed(self, open_time: int) -> bool:
        return open_time + self.interval_ms + self.grace_ms <= self.watermark

    def _emit(self, open_time: int) -> list[Bar]:
        self.next_open_time = open_time + self.interval_ms
        window = self._windows.pop(open_time, None)
        if window is None:
            if self.last_close is None or not self.emit_empty:
                return []
            return [self._empty_bar(open_time, self.last_close)]
        self.last_close = window.close
        return [self._bar(open_time, window)]

    def _bar(self, open_time: int, w: _Window) -> Bar:
        return Bar(
            symbol=self.symbol, event_time=open_time + self.interval_ms - 1, interval_ms=self.interval_ms,
            open_time=open_time, close_time=open_time + self.interval_ms - 1,
            open=w.open, high=w.high, low=w.low, close=w.close, volume=w.volume,
            quote_volume=w.quote_volume, count=w.count, taker_buy_volume=w.taker_buy_volume,
            taker_buy_quote_volume=w.taker_buy_quote_volume, vwap=w.quote_volume / w.volume if w.volume else w.close,
            empty=False, first_trade_id=w.first_trade_id, last_trade_id=w.last_trade_id,
        )

    def _empty_bar(self, open_time: int, price: float) -> Bar:
        return Bar(
            symbol=self.symbol, event_time=open_time + self.interval_ms - 1, interval_ms=self.interval_ms,
            open_time=open_time, close_time=open_time + self.interval_ms - 1,
            open=price, high=price, low=price, close=price, volume=0.0, quote_volume=0.0, count=0,
            taker_buy_volume=0.0, taker_buy_quote_volume=0.0, vwap=price, empty=True,
            first_trade_id=-1, last_trade_id=-1,
        )

    def _late(self, trade: Trade) -> None:
        self.late_trades += 1
        self.late_volume += trade.qty
        if self.on_late is not None:
            assert self.next_open_time is not None
            self.on_late(trade, self.next_open_time)
