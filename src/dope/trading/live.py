"""The live trader: the trader core driven by bars and predictions as they arrive, with risk limits and a journal.

:class:`LiveTrader` is what the trader service runs, without the bus: give it bars and
predictions (with the time they arrived on the trader's clock) and it returns the messages to
publish (``Decision``, ``Fill``, ``Equity``). Per symbol it handles bars strictly in order,
each one the way the backtester's event path does (:mod:`dope.backtest.event`)::

    core.on_bar(open_time, open, close)   # the order decided at the previous close fills at this open
    equity, risk limits                   # marked at the close; the daily-loss kill switch
    core.on_prediction(prediction)        # the decision at this close (or a hold, and why)

A bar waits for its prediction: a later bar that arrives meanwhile is queued, so a fast replay
(bars arriving faster than predictions) gives the same decisions as the backtester. The wait
ends with the prediction, with a prediction for a later bar (this one will not come), or after
``risk.max_prediction_delay_ms`` on the trader's clock (a hold: "no prediction"). With the
Binance broker, which trades at once, a prediction is also stale when a newer bar has arrived.

Everything is journaled (:mod:`dope.trading.journal`) so a restarted trader resumes: the
portfolio is the journal's fills re-booked, the waiting paper order and the risk state come
from the last bar's record, and bars already handled are skipped.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dope.clock import SimulatedClock
from dope.logs import ProblemCounter
from dope.messages import AnyMessage, Bar, Decision, Equity, Fill, Prediction
from dope.trading.binance import OUTCOME_UNKNOWN, BinanceBroker, client_order_id
from dope.trading.broker import Broker, PaperBroker
from dope.trading.config import TradingConfig
from dope.trading.journal import FillRecord, Journal, Record, StepRecord, SymbolHistory
from dope.trading.orders import Execution, Order
from dope.trading.portfolio import Portfolio
from dope.trading.risk import RiskLimits
from dope.trading.strategy import ThresholdStrategy
from dope.trading.trader import Trader

log = logging.getLogger("dope.trader")

Execute = Callable[[BinanceBroker, int, float, str], tuple[Execution, ...]]
"""Runs ``BinanceBroker.execute(open_time, price, leg)`` to completion (the service owns the event loop)."""

MAX_EARLY_PREDICTIONS = 1_000


def action_of(before: int, after: int) -> str:
    """``buy`` when the direction goes up, ``sell`` when it goes down, else ``hold``."""
    return "buy" if after > before else "sell" if after < before else "hold"


@dataclass
class _Waiting:
    bar: Bar
    arrived_ms: int


class SymbolTrader:
    """One symbol: the core trader, its risk limits, the bar queue and the early predictions."""

    def __init__(self, symbol: str, config: TradingConfig, history: SymbolHistory | None, *,
                 make_broker: Callable[[Portfolio], Broker] | None = None, journal: Journal | None = None,
                 execute: Execute | None = None,
                 counters: dict[str, int] | None = None) -> None:
        self.symbol = symbol
        self.config = config
        self.journal = journal
        self.execute = execute
        self.counters = counters if counters is not None else {}
        self.problems = ProblemCounter(logging.LoggerAdapter(log, {"symbol": symbol}))  # type: ignore[arg-type]
        self.clock = SimulatedClock()
        self.portfolio = restored_portfolio(config.initial_cash, history)
        self.broker = make_broker(self.portfolio) if make_broker is not None else self._paper_broker(history)
        strategy = ThresholdStrategy.of(config.thresholds())
        self.core = Trader(symbol, strategy, self.broker, self.portfolio, self.clock)
        step = history.last_step if history is not None else None
        self.risk = RiskLimits(config.risk, step.risk if step is not None else None)
        if history is not None and history.resets:
            self.risk.reset()
        if isinstance(self.broker, BinanceBroker):  # a ban outlives a restart
            client = self.broker.client
            client.banned_until_ms = max(client.banned_until_ms, self.risk.state.halted_until_ms)
        self.last_open_time = step.open_time if step is not None else -1
        self.bh_qty = step.bh_qty if step is not None else 0.0
        self.waiting: _Waiting | None = None
        self.queue: deque[_Waiting] = deque()
        self.early: dict[int, tuple[Prediction, int]] = {}
        self._step_fills: list[FillRecord] = []

    def _paper_broker(self, history: SymbolHistory | None) -> PaperBroker:
        broker = PaperBroker.of(self.portfolio, self.config.costs())
        step = history.last_step if history is not None else None
        if step is not None and step.pending is not None:
            broker.submit(step.pending)
        return broker

    @property
    def newest_open_time(self) -> int:
        """Open time of the newest bar taken in (handled, waiting or queued)."""
        if self.queue:
            return self.queue[-1].bar.open_time
        return self.waiting.bar.open_time if self.waiting is not None else self.last_open_time

    # ---- inputs --------------------------------------------------------------------------------

    def on_bar(self, bar: Bar, now_ms: int, *, wait: bool = True) -> list[AnyMessage]:
        """Take a bar in (``wait=False``: do not wait for its prediction, e.g. bars caught up after a restart)."""
        if bar.open_time <= self.newest_open_time:
            self._count("old_bars")
            return []
        self.queue.append(_Waiting(bar, now_ms))
        out = self._advance()
        if not wait and self.waiting is not None and self.waiting.bar is bar:
            out += self._give_up("no prediction: bar caught up after a restart")
        return out

    def on_prediction(self, pred: Prediction, now_ms: int) -> list[AnyMessage]:
        """Take a prediction in: decide on it, keep it for its bar, or refuse it as stale."""
        waiting = self.waiting
        if waiting is not None and pred.open_time == waiting.bar.open_time:
            return self._decide(pred, now_ms)
        if pred.open_time > self.newest_open_time or (self.queue and pred.open_time > waiting_open(waiting)):
            return self._keep_early(pred, now_ms)
        self._warn("stale_predictions", f"prediction for bar {pred.open_time} refused: that bar already had its "
                                        "decision")
        return []

    def poll(self, now_ms: int) -> list[AnyMessage]:
        """Stop waiting for a prediction that is overdue (``max_prediction_delay_ms`` on the trader's clock)."""
        self._watch_exchange()
        limit = self.config.risk.max_prediction_delay_ms
        out: list[AnyMessage] = []
        while self.waiting is not None and limit > 0 and now_ms - self.waiting.arrived_ms > limit:
            out += self._give_up(f"no prediction within {limit} ms")  # then the next queued bar, if any
        return out

    def kill(self, reason: str) -> None:
        """Engage the kill switch by hand or after a failed reconciliation (no new entries until reset)."""
        self.risk.state.killed, self.risk.state.reason = True, reason
        self._count("kill_switch_trips")
        log.error("%s: KILL SWITCH: %s", self.symbol, reason, extra={"symbol": self.symbol})

    def _watch_exchange(self) -> None:
        """While Binance bans this IP (HTTP 418) the kill switch is on; it goes off when the ban ends."""
        broker = self.broker
        if not isinstance(broker, BinanceBroker):
            return
        client = broker.client
        now = client.clock.now_ms()
        if client.banned_until_ms > now and self.risk.state.halted_until_ms != client.banned_until_ms:
            left_s = (client.banned_until_ms - now) / 1000
            self.risk.halt(client.banned_until_ms, f"Binance banned this IP (HTTP 418) for {left_s:.0f} s")
            self._count("kill_switch_trips")
            log.error("%s: KILL SWITCH: %s", self.symbol, self.risk.state.reason, extra={"symbol": self.symbol})
        elif self.risk.end_halt(now):
            log.warning("%s: the exchange ban is over: kill switch off, trading again", self.symbol,
                        extra={"symbol": self.symbol})

    def _keep_early(self, pred: Prediction, now_ms: int) -> list[AnyMessage]:
        if len(self.early) >= MAX_EARLY_PREDICTIONS:
            self._count("early_predictions_dropped")
            self.early.pop(min(self.early))
        self.early[pred.open_time] = (pred, now_ms)
        waiting = self.waiting
        if waiting is not None and pred.open_time > waiting.bar.open_time:
            return self._give_up("no prediction: one for a later bar arrived first") + self._advance()
        return []

    # ---- the bar loop --------------------------------------------------------------------------

    def _advance(self) -> list[AnyMessage]:
        """Handle queued bars in order while none is waiting for its prediction."""
        out: list[AnyMessage] = []
        while self.waiting is None and self.queue:
            item = self.queue.popleft()
            out += self._handle_bar(item.bar)
            self.waiting = item
            self._drop_old_early(item.bar.open_time)
            early = self.early.pop(item.bar.open_time, None)
            if early is not None:
                out += self._decide(*early)
            elif any(t > item.bar.open_time for t in self.early) or (self.queue and self._no_wait()):
                out += self._give_up("no prediction: one for a later bar arrived first")
        return out

    def _no_wait(self) -> bool:
        return self.config.risk.max_prediction_delay_ms <= 0

    def _drop_old_early(self, open_time: int) -> None:
        for t in [t for t in self.early if t < open_time]:
            del self.early[t]
            self._count("stale_predictions")

    def _handle_bar(self, bar: Bar) -> list[AnyMessage]:
        """Fills at the open, equity at the close, the kill switch."""
        self.clock.advance_to(bar.close_time)
        pending = self.broker.pending
        if pending is not None and isinstance(self.broker, PaperBroker):
            costs = self.broker.costs
            self.broker.costs = costs._replace(fraction=self._fraction(bar.open, pending.target))
        before = self.portfolio.direction
        fills = self.core.on_bar(bar.open_time, bar.open, bar.close)
        out: list[AnyMessage] = []
        for fill in fills:
            leg = "close" if before != 0 and fill.side == -before else "open"
            before = 0 if leg == "close" else fill.side
            assert pending is not None
            out.append(self._paper_fill(fill, paper_order_id(self.symbol, pending.time_ms, leg), bar.close_time))
        if self.bh_qty == 0.0:
            self.bh_qty = self.config.initial_cash / bar.open
        tripped = self.risk.on_equity(bar.open_time, self.portfolio.equity(bar.close))
        if tripped is not None:
            out += self._kill(bar, tripped)
        out.append(self._equity(bar))
        return out

    def _fraction(self, price: float, target: int) -> float:
        cfg = self.config
        return self.risk.fraction(cfg.fraction, self.portfolio.cash, price, target, cfg.fee_rate, cfg.slippage)

    def _kill(self, bar: Bar, reason: str) -> list[AnyMessage]:
        """The kill switch tripped: drop the waiting order, go flat, no new entries."""
        log.error("%s: KILL SWITCH at bar %d: %s", self.symbol, bar.open_time, reason, extra={"symbol": self.symbol})
        self._count("kill_switch_trips")
        self.broker.cancel()
        before = self.portfolio.direction
        out: list[AnyMessage] = []
        if before != 0:
            self.broker.submit(Order(symbol=self.symbol, time_ms=self.clock.now_ms(), target=0, prediction=math.nan))
            out += self._execute_now(bar, "kill")
        out.append(self._decision(bar, None, action_of(before, 0), 0, f"kill switch: {reason}"))
        return out

    def _decide(self, pred: Prediction, arrived_ms: int) -> list[AnyMessage]:
        waiting = self.waiting
        assert waiting is not None
        bar = waiting.bar
        self._watch_exchange()
        reason = self._hold_reason(pred, arrived_ms, waiting)
        before = self.portfolio.direction
        out: list[AnyMessage] = []
        if reason is None:
            value = pred.prediction if pred.prediction is not None else math.nan
            order = self.core.on_prediction(value)
            reason = "threshold" if order is not None else "within thresholds"
            if order is not None:
                out += self._execute_now(bar, "")
                problem = self.broker.problem if isinstance(self.broker, BinanceBroker) else None
                reason = problem or reason
        target = self.broker.pending.target if self.broker.pending is not None else self.portfolio.direction
        out.append(self._decision(bar, pred.prediction, action_of(before, target), target, reason))
        return out + self._finish_bar()

    def _hold_reason(self, pred: Prediction, arrived_ms: int, waiting: _Waiting) -> str | None:
        if self.risk.state.killed:
            self._count("holds_kill_switch")
            return f"kill switch: {self.risk.state.reason}"
        if pred.prediction is None or not math.isfinite(pred.prediction):
            self._count("holds_no_prediction")
            return f"no prediction ({pred.chosen_by})"
        stale = self.risk.stale_prediction(arrived_ms, waiting.arrived_ms)
        if stale is None and self.execute is not None and self.queue:
            stale = "stale prediction: a newer bar has already arrived"
        if stale is None:
            stale = self.risk.stale_price(waiting.bar.close_time, arrived_ms)
        if stale is not None:
            self._warn("holds_stale", f"bar {waiting.bar.open_time}: {stale}")
        return stale

    def _execute_now(self, bar: Bar, leg: str) -> list[AnyMessage]:
        """With a live broker, send the order at once (at the bar's close price for sizing)."""
        broker = self.broker
        if self.execute is None or not isinstance(broker, BinanceBroker):
            return []
        pending = broker.pending
        if pending is not None:
            broker.fraction = self._fraction(bar.close, pending.target)
        fills = self.execute(broker, bar.open_time, bar.close, leg)
        if broker.problem is not None:
            self._count("orders_not_done")
            if broker.problem.startswith(OUTCOME_UNKNOWN):
                self.kill(broker.problem)
        self._watch_exchange()
        return [self._fill_message(f, cid, bar.close_time) for f, cid in zip(fills, broker.last_ids, strict=True)]

    def _give_up(self, reason: str) -> list[AnyMessage]:
        waiting = self.waiting
        if waiting is None:
            return []
        self._count("holds_no_prediction")
        d = self.portfolio.direction
        pending = self.broker.pending
        target = pending.target if pending is not None else d
        out: list[AnyMessage] = [self._decision(waiting.bar, None, "hold", target, reason)]
        return out + self._finish_bar()

    def _finish_bar(self) -> list[AnyMessage]:
        """The bar is done: journal it and let the next one in."""
        waiting = self.waiting
        assert waiting is not None
        bar = waiting.bar
        self.waiting = None
        self.last_open_time = bar.open_time
        self._journal(StepRecord(symbol=self.symbol, open_time=bar.open_time, close=bar.close,
                                 fills=self._step_fills, pending=self.broker.pending, risk=self.risk.state,
                                 bh_qty=self.bh_qty))
        self._step_fills = []
        self._count("bars")
        return self._advance()

    # ---- messages ------------------------------------------------------------------------------

    def _paper_fill(self, fill: Execution, cid: str, event_time: int) -> Fill:
        """A paper fill: journaled with its bar's step record."""
        self._step_fills.append(FillRecord(symbol=self.symbol, client_order_id=cid, fill=fill))
        return self._fill_message(fill, cid, event_time)

    def _fill_message(self, fill: Execution, cid: str, event_time: int) -> Fill:
        self._count("fills")
        return Fill(symbol=self.symbol, event_time=event_time, client_order_id=cid,
                           side="BUY" if fill.side > 0 else "SELL", qty=fill.qty, price=fill.price, fee=fill.fee,
                           fee_asset="quote")

    def _decision(self, bar: Bar, prediction: float | None, action: str, target: int, reason: str) -> Decision:
        self._count(f"decisions.{action}")
        return Decision(symbol=self.symbol, event_time=bar.close_time, open_time=bar.open_time, prediction=prediction,
                        action=action, target_position=target, reason=reason)

    def _equity(self, bar: Bar) -> Equity:
        pf = self.portfolio
        return Equity(symbol=self.symbol, event_time=bar.close_time, open_time=bar.open_time, cash=pf.cash,
                      position=pf.qty, equity=pf.equity(bar.close), buy_and_hold=self.bh_qty * bar.close,
                      kill_switch=self.risk.state.killed)

    def _journal(self, record: Record) -> None:
        if self.journal is not None:
            self.journal.append(record)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _warn(self, kind: str, message: str) -> None:
        """Count ``kind`` and log the message (every one of the first ten of a kind, then one in a thousand)."""
        self._count(kind)
        self.problems.report(kind, f"{self.symbol}: {message}")


def paper_order_id(symbol: str, time_ms: int, leg: str) -> str:
    """The client order id of a paper fill: one leg of the order decided at ``time_ms`` (its bar's close time).

    >>> paper_order_id("BTCUSDT", 1723161249999, "open")
    'paper-BTCUSDT-1723161249999-open'
    """
    return "paper-" + client_order_id(symbol, time_ms, leg)[5:]


def waiting_open(waiting: _Waiting | None) -> int:
    return waiting.bar.open_time if waiting is not None else -1


def restored_portfolio(cash: float, history: SymbolHistory | None) -> Portfolio:
    """A portfolio with the journal's fills booked again, in order (the same arithmetic, the same state)."""
    portfolio = Portfolio(cash)
    for fill in history.fills if history is not None else []:
        portfolio.apply_fill(fill)
    return portfolio
