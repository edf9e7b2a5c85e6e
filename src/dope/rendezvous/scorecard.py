"""Live scorecards: streaming statistics per (model, symbol), persisted as JSON.

Each card counts rounds, in-time answers, deadline misses, late and rejected scores and how
often the model was chosen; keeps the last ``latency_window`` latencies (a fixed-size ring,
percentiles computed on demand); and, once the realised forward return of a bar is known,
the squared and absolute errors, directional hits, a rolling window of (prediction, realised)
pairs for the Spearman information coefficient; and a shadow account trading the model's
predictions by the trader's own rule (:mod:`dope.rendezvous.shadow`), whose equity change is the P&L.

>>> card = ModelCard("rf", "BTCUSDT", initial_cash=1000.0, window=8, latency_window=8)
>>> card.record_outcome(0.01, 0.02)
>>> card.hits, card.pnl
(1, 0.0)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from dope.fileio import atomic_write_json
from dope.messages import Scorecard
from dope.rendezvous.shadow import BarTape, ShadowAccount, ShadowRule
from dope.types import FloatArray

log = logging.getLogger("dope.rendezvous")

STATE_FORMAT: Final = "dope-scorecards"
STATE_VERSION: Final = 2  # 2: the P&L is a shadow account (version 1 kept a log-return sum)
MIN_PAIRS: Final = 3


class Ring:
    """The last ``size`` floats pushed, in a fixed numpy buffer."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"ring size must be >= 1, got {size}")
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0

    def push(self, value: float) -> float:
        """Keep ``value``; return the value it pushed out (0.0 while the ring is not full)."""
        i = self._n % len(self._buf)
        evicted = float(self._buf[i]) if self._n >= len(self._buf) else 0.0
        self._buf[i] = value
        self._n += 1
        return evicted

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def raw(self) -> FloatArray:
        """The kept values in storage order (no copy): for statistics that ignore order, or that pair
        two rings written in step."""
        return self._buf[: len(self)]

    def values(self) -> FloatArray:
        """The kept values, oldest first."""
        if self._n <= len(self._buf):
            return self._buf[: self._n].copy()
        return np.roll(self._buf, -(self._n % len(self._buf)))

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.push(float(value))


def percentiles(values: FloatArray, qs: tuple[float, ...] = (50.0, 99.0)) -> tuple[float | None, ...]:
    """Percentiles of ``values`` with linear interpolation (numpy's default), None each when empty."""
    if len(values) == 0:
        return tuple(None for _ in qs)
    ordered = np.sort(values)
    out = []
    for q in qs:
        pos = q / 100 * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        out.append(float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)))
    return tuple(out)


def average_ranks(values: FloatArray) -> FloatArray:
    """Ranks 1..n, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.empty(len(values), dtype=bool)
    starts_group[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(values))
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(starts_group) - 1]
    return ranks


def pearson(a: FloatArray, b: FloatArray) -> float | None:
    """Pearson correlation, or None with fewer than three pairs or a constant side."""
    if len(a) < MIN_PAIRS:
        return None
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    return float(da @ db) / denom if denom > 0 else None


def spearman(a: FloatArray, b: FloatArray) -> float | None:
    """Spearman's rank correlation (Pearson of average ranks), or None when undefined."""
    if len(a) < MIN_PAIRS:
        return None
    return pearson(average_ranks(a), average_ranks(b))


class ModelCard:
    """The scorecard of one model on one symbol."""

    def __init__(self, model_id: str, symbol: str, *, initial_cash: float, window: int = 500,
                 latency_window: int = 1024, divergence_window: int = 100) -> None:
        self.model_id, self.symbol = model_id, symbol
        self.rounds = self.answered = self.misses = self.late = self.rejected = self.chosen = 0
        self.realised = self.hits = self.directional = 0
        self.sse = self.sae = 0.0
        self.shadow = ShadowAccount(initial_cash)
        self.latency_us, self.arrival_ms = Ring(latency_window), Ring(latency_window)
        self.ic_pred, self.ic_real = Ring(window), Ring(window)
        self.div_champion, self.div_self = Ring(divergence_window), Ring(divergence_window)
        self.alarm = False
        self._abs_diff = 0.0

    def record_answer(self, latency_us: int, arrival_ms: int) -> None:
        """A score that arrived in time."""
        self.answered += 1
        self.latency_us.push(float(latency_us))
        self.arrival_ms.push(float(arrival_ms))

    def record_late(self, latency_us: int, arrival_ms: int) -> None:
        """A score after its round closed (the miss itself was counted at the close)."""
        self.late += 1
        self.latency_us.push(float(latency_us))
        self.arrival_ms.push(float(arrival_ms))

    @property
    def pnl(self) -> float:
        """The shadow account's equity change (quote currency)."""
        return self.shadow.pnl

    def record_outcome(self, prediction: float, realised: float) -> None:
        """Compare a prediction with the realised forward return: errors, hit, IC pair."""
        error = prediction - realised
        self.realised += 1
        self.sse += error * error
        self.sae += abs(error)
        if realised != 0.0:
            self.directional += 1
            self.hits += (prediction > 0.0) == (realised > 0.0) and prediction != 0.0
        self.ic_pred.push(prediction)
        self.ic_real.push(realised)

    def record_pair(self, champion: float, own: float) -> None:
        """A round where both the champion and this (canary) model answered (O(1): a running sum)."""
        old_champion = self.div_champion.push(champion)
        old_own = self.div_self.push(own)
        self._abs_diff += abs(champion - own) - abs(old_champion - old_own)

    def mean_divergence(self) -> float | None:
        """Rolling mean absolute difference from the champion (running sum; cheap every round)."""
        n = len(self.div_self)
        return max(self._abs_diff, 0.0) / n if n else None

    def divergence(self) -> tuple[float | None, float | None]:
        """Mean absolute difference from the champion and correlation with it (rolling, exact)."""
        a, b = self.div_champion.values(), self.div_self.values()
        if len(a) == 0:
            return None, None
        return float(np.mean(np.abs(a - b))), pearson(a, b)

    def snapshot(self, role: str, event_time: int) -> Scorecard:
        """The card as a ``Scorecard`` message."""
        p50, p99 = percentiles(self.latency_us.raw())
        a50, a99 = percentiles(self.arrival_ms.raw())
        div, corr = self.divergence()
        n = self.realised
        return Scorecard(
            symbol=self.symbol, event_time=event_time, model_id=self.model_id, role=role, rounds=self.rounds,
            answered=self.answered, misses=self.misses, late=self.late, rejected=self.rejected,
            chosen=self.chosen, latency_p50_us=p50, latency_p99_us=p99, arrival_p50_ms=a50, arrival_p99_ms=a99,
            realised=n, rmse=math.sqrt(self.sse / n) if n else None, mae=self.sae / n if n else None,
            hit_rate=self.hits / self.directional if self.directional else None,
            ic=spearman(self.ic_pred.values(), self.ic_real.values()), pnl=self.pnl, trades=self.shadow.trades,
            divergence=div, divergence_corr=corr, divergence_alarm=self.alarm)

    # ---- persistence -----------------------------------------------------------------------------
    _COUNTS: Final = ("rounds", "answered", "misses", "late", "rejected", "chosen", "realised", "hits",
                      "directional", "sse", "sae", "alarm")
    _RINGS: Final = ("latency_us", "arrival_ms", "ic_pred", "ic_real", "div_champion", "div_self")

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume the card, as JSON-able values."""
        state: dict[str, Any] = {"model_id": self.model_id, "symbol": self.symbol}
        state.update({name: getattr(self, name) for name in self._COUNTS})
        state.update({name: getattr(self, name).values().tolist() for name in self._RINGS})
        state["shadow"] = self.shadow.to_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``to_state``'s output (rings keep at most their size, newest last)."""
        for name in self._COUNTS:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name in self._RINGS:
            getattr(self, name).extend(state[name])
        self.shadow = ShadowAccount.from_state(state["shadow"])
        a, b = self.div_champion.raw(), self.div_self.raw()
        self._abs_diff = float(np.sum(np.abs(a - b)))


class ScorecardBook:
    """All cards, keyed by (model_id, symbol), with JSON persistence, and the bars their shadow accounts trade.

    ``rule`` is the trader's rule the shadow accounts follow; a book without one (``dope models
    scorecards``) is only read and reported."""

    def __init__(self, *, rule: ShadowRule | None = None, window: int = 500, latency_window: int = 1024,
                 divergence_window: int = 100) -> None:
        self.rule = rule
        self._sizes = {"window": window, "latency_window": latency_window, "divergence_window": divergence_window}
        self.cards: dict[tuple[str, str], ModelCard] = {}
        self.tapes: dict[str, BarTape] = {}
        self.saved_roles: dict[str, str] = {}

    def _rule(self) -> ShadowRule:
        if self.rule is None:
            raise ValueError("this scorecard book has no trading rule: it is only read and reported")
        return self.rule

    def card(self, model_id: str, symbol: str) -> ModelCard:
        """The card of ``model_id`` on ``symbol`` (created empty on first use)."""
        key = (model_id, symbol)
        found = self.cards.get(key)
        if found is None:
            cash = self.rule.initial_cash if self.rule is not None else math.nan
            found = self.cards[key] = ModelCard(model_id, symbol, initial_cash=cash, **self._sizes)
        return found

    def _tape(self, symbol: str) -> BarTape:
        tape = self.tapes.get(symbol)
        if tape is None:
            tape = self.tapes[symbol] = BarTape()
        return tape

    def add_bar(self, symbol: str, open_time: int, interval_ms: int, open_price: float, close_price: float) -> None:
        """A bar of ``symbol``: the shadow accounts execute the orders waiting for its open and mark its close."""
        rule, tape = self._rule(), self._tape(symbol)
        if tape.add(open_time, interval_ms, open_price, close_price):
            for (_, card_symbol), card in self.cards.items():
                if card_symbol == symbol:
                    card.shadow.advance(tape, rule)

    def trade(self, model_id: str, symbol: str, open_time: int, prediction: float) -> None:
        """The prediction ``model_id`` gave at the close of bar ``open_time``: its shadow account decides."""
        rule, tape = self._rule(), self._tape(symbol)
        shadow = self.card(model_id, symbol).shadow
        shadow.decide_at(open_time, prediction)
        shadow.advance(tape, rule)

    def snapshots(self, role_of: dict[str, str], event_time: int) -> list[Scorecard]:
        """Every card as a message, sorted by symbol then model."""
        return [self.cards[key].snapshot(role_of.get(key[0], ""), event_time)
                for key in sorted(self.cards, key=lambda k: (k[1], k[0]))]

    def to_state(self, roles: dict[str, str] | None = None) -> dict[str, Any]:
        """The book as JSON-able values; ``roles`` (``{model_id: role}``) labels the cards."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "roles": dict(roles or {}),
                "cards": [card.to_state() for card in self.cards.values()]}

    def save(self, path: str | Path, roles: dict[str, str] | None = None) -> None:
        """Write the book (and the roles in force) to ``path`` atomically (temporary file, fsync, rename)."""
        atomic_write_json(Path(path), self.to_state(roles))

    def load(self, path: str | Path) -> int:
        """Resume from ``path`` if it exists; return how many cards were loaded.

        A corrupt file is logged and set aside as ``<name>.corrupt`` (the cards start over).
        The roles saved with it are in ``saved_roles``."""
        path = Path(path)
        if not path.exists():
            return 0
        try:
            state = read_state(path)
            self.saved_roles = {str(k): str(v) for k, v in state.get("roles", {}).items()}
            for entry in state["cards"]:
                self.card(entry["model_id"], entry["symbol"]).load_state(entry)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rendezvous: scorecards in %s unreadable (%s); moved aside, starting afresh", path, exc)
            self.cards.clear()
            os.replace(path, path.with_name(path.name + ".corrupt"))
            return 0
        return len(self.cards)


def read_state(path: Path) -> dict[str, Any]:
    """The saved scorecard state in ``path``; ``ValueError`` naming the file if it is not one."""
    state = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a DOPE scorecards file")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: scorecards format version {state.get('version')}, expected {STATE_VERSION}")
    return state


