"""Shadow accounts: the trader's own rule applied to each model's predictions.

Every (model, symbol) scorecard holds a :class:`ShadowAccount` that starts flat with the
trader's cash and trades as the trader would if that model alone were chosen: at the close
of bar ``t`` its prediction decides (:func:`dope.trading.rule.decide`, the trader's
thresholds), at the open of the next bar the order executes (:func:`dope.trading.rule.execute`,
the trader's fees, slippage and sizing), and the account is marked at the newest close. Its
P&L is the equity change, in quote currency: the event backtest's for the same predictions
and bars. No arithmetic of its own: every number comes from :mod:`dope.trading`.

Bars and predictions come on different sockets, in any order: a decision waits for the bar
it executes at (kept in a :class:`BarTape` per symbol), and decisions are taken in bar order
(a round closed after a newer one of the same model is too late to trade and is counted in
``stale``). A bar without a prediction of the model (a miss, an abstention) holds.

>>> rule = ShadowRule(Thresholds(0.01, -0.01, False), Costs(fee_rate=0.0, slippage=0.0, fraction=1.0), 1000.0)
>>> tape, account = BarTape(), ShadowAccount(rule.initial_cash)
>>> tape.add(0, 10, 100.0, 100.0)
True
>>> account.decide_at(0, 0.02); account.advance(tape, rule)  # long, from the close of bar 0
>>> tape.add(10, 10, 105.0, 110.0)  # bar 1: bought at its open, marked at its close
True
>>> account.advance(tape, rule); round(account.pnl, 6), account.trades
(47.619048, 1)
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any, NamedTuple

from dope.trading.accounting import HOLD, mark
from dope.trading.rule import Costs, Position, Thresholds, decide, execute, flat

KEEP_BARS = 512


class ShadowRule(NamedTuple):
    """The trader's rule as the shadow accounts take it: thresholds, costs and the starting cash."""

    thresholds: Thresholds
    costs: Costs
    initial_cash: float


class TapeBar(NamedTuple):
    open_time: int
    open: float
    close: float


class BarTape:
    """The recent bars of one symbol, oldest first (a bar not newer than the newest is ignored)."""

    def __init__(self, keep: int = KEEP_BARS) -> None:
        self._bars: OrderedDict[int, TapeBar] = OrderedDict()
        self._keep = keep
        self._interval = 0
        self.newest: TapeBar | None = None

    def add(self, open_time: int, interval_ms: int, open_price: float, close_price: float) -> bool:
        """Keep a bar; False (ignored) when it is not newer than the newest or its prices are not positive."""
        if self.newest is not None and open_time <= self.newest.open_time:
            return False
        if not (0.0 < open_price < math.inf and 0.0 < close_price < math.inf):
            return False
        self.newest = self._bars[open_time] = TapeBar(open_time, open_price, close_price)
        self._interval = interval_ms
        while len(self._bars) > self._keep:
            self._bars.popitem(last=False)
        return True

    def next_after(self, open_time: int) -> TapeBar | None:
        """The first bar opening after ``open_time`` (None until it arrived)."""
        if self.newest is None or self.newest.open_time <= open_time:
            return None
        found = self._bars.get(open_time + self._interval)
        return found if found is not None else next(b for b in self._bars.values() if b.open_time > open_time)


class ShadowAccount:
    """One model's account on one symbol: decisions in bar order, each executed at the next bar's open."""

    def __init__(self, initial_cash: float) -> None:
        self.initial_cash = initial_cash
        self.position: Position = flat(initial_cash)
        self.order, self.order_bar = HOLD, -1  # the order decided at the close of ``order_bar``
        self.decided = -1  # the newest bar a prediction was queued for
        self.queue: deque[tuple[int, float]] = deque()
        self.price = math.nan  # the newest close marked
        self.trades = self.stale = 0

    def decide_at(self, open_time: int, prediction: float) -> None:
        """The model's prediction at the close of bar ``open_time`` (taken by :meth:`advance`, in bar order)."""
        if open_time <= self.decided:
            self.stale += 1
            return
        self.decided = open_time
        self.queue.append((open_time, prediction))

    def advance(self, tape: BarTape, rule: ShadowRule) -> None:
        """Execute and decide as far as the bars allow, then mark at the newest close."""
        while True:
            if self.order != HOLD:
                bar = tape.next_after(self.order_bar)
                if bar is None:
                    break
                self.position, closed, opened = execute(self.position, self.order, bar.open, rule.costs)
                self.trades += int(closed.side != 0 or opened.side != 0)
                self.order = HOLD
            if not self.queue:
                break
            self.order_bar, prediction = self.queue.popleft()
            self.order = decide(prediction, self.position.direction, rule.thresholds)
        if tape.newest is not None:
            self.price = tape.newest.close

    @property
    def equity(self) -> float:
        """Cash plus the position at the newest close (the cash alone before any bar)."""
        p = self.position
        return p.cash if p.direction == 0 else mark(p.cash, p.direction * p.qty, self.price)

    @property
    def pnl(self) -> float:
        """Equity change since the account opened, in quote currency."""
        return self.equity - self.initial_cash

    def to_state(self) -> dict[str, Any]:
        """The account as JSON-able values (NaN as None)."""
        return {"initial_cash": self.initial_cash, "position": [_json(v) for v in self.position],
                "order": self.order, "order_bar": self.order_bar, "decided": self.decided,
                "queue": [list(item) for item in self.queue], "price": _json(self.price),
                "trades": self.trades, "stale": self.stale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ShadowAccount:
        """The account ``to_state`` saved."""
        account = cls(float(state["initial_cash"]))
        cash, direction, qty, entry_price, entry_fee = state["position"]
        account.position = Position(float(cash), int(direction), float(qty), _float(entry_price), _float(entry_fee))
        account.order, account.order_bar = int(state["order"]), int(state["order_bar"])
        account.decided = int(state["decided"])
        account.queue.extend((int(t), float(p)) for t, p in state["queue"])
        account.price = _float(state["price"])
        account.trades, account.stale = int(state["trades"]), int(state["stale"])
        return account


def _json(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)
