"""Realised forward returns from the bars as they arrive, matched to the predictions waiting for them.

The target of a prediction for the bar opening at ``t`` is ``log(close[t + h] / close[t])``
(``h`` = ``horizon_bars``, the same target as ``dope.features.offline.forward_log_return``). It
is known only when the bar opening at ``t + h x interval`` has arrived: no look-ahead. A
prediction may arrive before or after that bar; either way it meets its outcome exactly once.

>>> out = Outcomes(horizon_bars=1)
>>> out.add_prediction("BTCUSDT", 0, "rf", 0.01)
[]
>>> out.add_bar("BTCUSDT", 0, 10_000, 100.0)
[]
>>> [(m, round(r, 6)) for m, _, _, r in out.add_bar("BTCUSDT", 10_000, 10_000, 101.0)]
[('rf', 0.00995)]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

# (model_id, open_time, prediction, realised)
Outcome = tuple[str, int, float, float]


class _SymbolState:
    def __init__(self) -> None:
        self.closes: dict[int, float] = {}
        self.realised: OrderedDict[int, float] = OrderedDict()
        self.pending: dict[int, list[tuple[str, float]]] = {}
        self.newest = -1


class Outcomes:
    """Bar closes per symbol, recent realised returns, and predictions waiting for theirs."""

    def __init__(self, horizon_bars: int = 1, keep: int = 512) -> None:
        if horizon_bars < 1:
            raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
        self.horizon = horizon_bars
        self.keep = keep
        self.unrealisable = 0
        self._symbols: dict[str, _SymbolState] = {}

    def _state(self, symbol: str) -> _SymbolState:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _SymbolState()
        return state

    def add_bar(self, symbol: str, open_time: int, interval_ms: int, close: float) -> list[Outcome]:
        """Record a bar's close; return the outcomes it realises (the bar ``horizon`` bars back)."""
        state = self._state(symbol)
        if not 0 < close < math.inf or open_time in state.closes:
            return []
        state.closes[open_time] = close
        state.newest = max(state.newest, open_time)
        base = open_time - self.horizon * interval_ms
        outcomes = self._realise(state, base, close)
        self._prune(state, base, interval_ms)
        return outcomes

    def _realise(self, state: _SymbolState, base: int, close: float) -> list[Outcome]:
        start = state.closes.get(base)
        if start is None:
            return []
        realised = math.log(close / start)
        state.realised[base] = realised
        while len(state.realised) > self.keep:
            state.realised.popitem(last=False)
        return [(mid, base, pred, realised) for mid, pred in state.pending.pop(base, [])]

    def _prune(self, state: _SymbolState, base: int, interval_ms: int) -> None:
        """Forget closes no future bar needs and predictions whose outcome can no longer come."""
        for old in [t for t in state.closes if t <= base - interval_ms]:
            del state.closes[old]
        for old in [t for t in state.pending if t <= base]:
            self.unrealisable += len(state.pending.pop(old))

    def add_prediction(self, symbol: str, open_time: int, model_id: str, prediction: float) -> list[Outcome]:
        """Queue a prediction; if its outcome is already known, return it at once."""
        state = self._state(symbol)
        realised = state.realised.get(open_time)
        if realised is not None:
            return [(model_id, open_time, prediction, realised)]
        state.pending.setdefault(open_time, []).append((model_id, prediction))
        return []

    def export(self, symbol: str) -> dict[str, Any]:
        """One symbol's state as JSON-ready data (a service's snapshot); :meth:`restore` reads it back."""
        state = self._state(symbol)
        return {"closes": sorted(state.closes.items()), "realised": list(state.realised.items()),
                "pending": sorted((t, [list(p) for p in preds]) for t, preds in state.pending.items()),
                "newest": state.newest}

    def restore(self, symbol: str, data: dict[str, Any]) -> None:
        """Replace one symbol's state with what :meth:`export` wrote."""
        state = self._symbols[symbol] = _SymbolState()
        state.closes = {int(t): float(c) for t, c in data["closes"]}
        state.realised = OrderedDict((int(t), float(r)) for t, r in data["realised"])
        state.pending = {int(t): [(str(m), float(p)) for m, p in preds] for t, preds in data["pending"]}
        state.newest = int(data["newest"])

    def pending_count(self) -> int:
        """Predictions still waiting for their outcome."""
        return sum(len(v) for s in self._symbols.values() for v in s.pending.values())
