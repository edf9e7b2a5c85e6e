"""The trainer's ledger: per-bar forecast errors and strategy P&L of every model, paired by bar.

It reuses the rendezvous' own pieces, so the loop judges models by the numbers the scorecards show:
:class:`~dope.rendezvous.Outcomes` realises each prediction's forward return without look-ahead, and a
:class:`~dope.rendezvous.ShadowAccount` per model trades its predictions by the trader's rule
(``dope.services.rendezvous.shadow_rule``). Bars and scores arrive on different sockets in any order,
so they are buffered and **settled** in one canonical order (bar by bar: the bar, then the scores made at
its close, by model id) up to a checkpoint time: the series are then the same in every run.

* ``errors[model][t]`` = prediction at the close of bar ``t`` minus the realised forward return;
* ``pnl[model][t]`` = the account's equity change over the bar after ``t`` (the P&L of the decision taken
  at the close of ``t``, in quote currency).

>>> from dope.trading.rule import Costs, Thresholds
>>> rule = ShadowRule(Thresholds(0.0, 0.0, False), Costs(0.0, 0.0, 1.0), 1000.0)
>>> ledger = Ledger("BTCUSDT", 10, horizon=1, rule=rule)
>>> for t, price in enumerate([100.0, 101.0, 102.0]):
...     ledger.add_bar("BTCUSDT", t * 10, 10, price, price)
...     ledger.add_score("BTCUSDT", t * 10, "a", 0.01)
>>> ledger.settle(30)
>>> ledger.paired("a", "a", 0, 30).n  # bars 0 and 10 are realised and traded
2
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dope.rendezvous import Outcomes, ShadowAccount, ShadowRule
from dope.rendezvous.shadow import BarTape
from dope.types import FloatArray


@dataclass(frozen=True)
class Paired:
    """Two models' series over the bars both have (``a`` first), in bar order."""

    open_times: list[int]
    errors_a: FloatArray
    errors_b: FloatArray
    pnl_a: FloatArray
    pnl_b: FloatArray

    @property
    def n(self) -> int:
        return len(self.open_times)


class Ledger:
    """Errors and P&L per model on one symbol, settled in bar order up to each checkpoint."""

    def __init__(self, symbol: str, interval_ms: int, *, horizon: int, rule: ShadowRule, keep_bars: int = 20_000
                 ) -> None:
        self.symbol, self.interval_ms, self.rule = symbol, interval_ms, rule
        self.keep_ms = keep_bars * interval_ms
        self.outcomes = Outcomes(horizon, keep=max(512, 4 * horizon))
        self.tape = BarTape()
        self.accounts: dict[str, ShadowAccount] = {}
        self.marked: dict[str, float] = {}
        self.errors: dict[str, dict[int, float]] = {}
        self.pnl: dict[str, dict[int, float]] = {}
        self.scored: dict[str, int] = {}
        """Newest bar each model answered (a prediction or an abstention), settled or not."""
        self.newest_bar = -1
        self.settled = -1
        """Bars opening before this time are settled."""
        self.late = 0
        self._bars: dict[int, tuple[float, float]] = {}
        self._scores: dict[int, dict[str, float]] = {}

    # ---- input, in any order -----------------------------------------------------------------------
    def add_bar(self, symbol: str, open_time: int, interval_ms: int, open_price: float, close: float) -> None:
        """A bar of the collector (other symbols and bars already settled are ignored)."""
        if symbol != self.symbol or interval_ms != self.interval_ms:
            return
        if open_time < self.settled:
            self.late += 1
            return
        self._bars[open_time] = (open_price, close)
        self.newest_bar = max(self.newest_bar, open_time)

    def add_score(self, symbol: str, open_time: int, model_id: str, prediction: float) -> None:
        """A model's answer for the bar opening at ``open_time`` (NaN: it abstained). The first answer of a
        model for a bar counts; later copies are ignored."""
        if symbol != self.symbol:
            return
        self.scored[model_id] = max(self.scored.get(model_id, -1), open_time)
        if open_time < self.settled:
            self.late += 1
            return
        self._scores.setdefault(open_time, {}).setdefault(model_id, prediction)

    def ready(self, time_ms: int, models: list[str]) -> bool:
        """Whether the bar closing at ``time_ms`` arrived and every one of ``models`` answered it."""
        last = time_ms - self.interval_ms
        return self.newest_bar >= last and all(self.scored.get(m, -1) >= last for m in models)

    # ---- settling ----------------------------------------------------------------------------------
    def settle(self, until_ms: int) -> None:
        """Take every buffered bar and score of bars opening before ``until_ms``, in bar order."""
        times = sorted(t for t in set(self._bars) | set(self._scores) if t < until_ms)
        for t in times:
            bar = self._bars.pop(t, None)
            if bar is not None:
                self._settle_bar(t, *bar)
            for model_id, prediction in sorted(self._scores.pop(t, {}).items()):
                self._settle_score(t, model_id, prediction)
        self.settled = max(self.settled, until_ms)
        self._forget(until_ms - self.keep_ms)

    def _settle_bar(self, open_time: int, open_price: float, close: float) -> None:
        if not self.tape.add(open_time, self.interval_ms, open_price, close):
            return
        realised_now = self.outcomes.add_bar(self.symbol, open_time, self.interval_ms, close)
        for model_id, bar_time, prediction, realised in realised_now:
            self.errors.setdefault(model_id, {})[bar_time] = prediction - realised
        decided = open_time - self.interval_ms
        for model_id, account in self.accounts.items():
            account.advance(self.tape, self.rule)
            pnl = account.pnl
            self.pnl.setdefault(model_id, {})[decided] = pnl - self.marked[model_id]
            self.marked[model_id] = pnl

    def _settle_score(self, open_time: int, model_id: str, prediction: float) -> None:
        if not math.isfinite(prediction):
            return
        account = self.accounts.get(model_id)
        if account is None:
            account = self.accounts[model_id] = ShadowAccount(self.rule.initial_cash)
            self.marked[model_id] = 0.0
        account.decide_at(open_time, prediction)
        account.advance(self.tape, self.rule)
        for _, bar_time, pred, realised in self.outcomes.add_prediction(self.symbol, open_time, model_id,
                                                                         prediction):
            self.errors.setdefault(model_id, {})[bar_time] = pred - realised

    def _forget(self, before_ms: int) -> None:
        for series in (*self.errors.values(), *self.pnl.values()):
            for t in [t for t in series if t < before_ms]:
                del series[t]

    # ---- output ------------------------------------------------------------------------------------
    def paired(self, a: str, b: str, since_ms: int, until_ms: int) -> Paired:
        """The settled bars in ``[since_ms, until_ms)`` that both ``a`` and ``b`` have an error and a P&L for."""
        ea, eb = self.errors.get(a, {}), self.errors.get(b, {})
        pa, pb = self.pnl.get(a, {}), self.pnl.get(b, {})
        times = sorted(t for t in ea.keys() & eb.keys() & pa.keys() & pb.keys() if since_ms <= t < until_ms)
        def pick(series: dict[int, float]) -> FloatArray:
            return np.fromiter((series[t] for t in times), dtype=np.float64, count=len(times))

        return Paired(times, pick(ea), pick(eb), pick(pa), pick(pb))
