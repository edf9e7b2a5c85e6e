"""The model-health monitor: feature and prediction drift of the champion, and data quality, per symbol.

:class:`HealthMonitor` is fed what the decoy receives (feature vectors, bars, late-trade reports,
the rendezvous' predictions) and returns the :class:`~dope.messages.ModelHealth` messages to publish:
one every ``every`` vectors once the window is full, and one whenever the drift alarm or the stale
flag of a symbol changes. It keeps at most ``window`` vectors, predictions and bars per symbol.

Drift is measured against the reference sample saved with the champion at training time (loaded
through a :data:`ReferenceLoader`, again whenever ``roles.json`` names another champion). The alarm is
raised when any feature's PSI is above ``drift_psi`` or KS above ``drift_ks`` (or the predictions'),
and cleared only when every statistic is below ``CLEAR_FRACTION`` of its level (hysteresis: no flapping
around the level). A feed is stale when its last bar closed more than ``STALE_INTERVALS`` intervals ago:
by the wall clock when ``clock`` is given (live), else by the newest bar of any symbol (replays and
simulations run faster than the wall clock; bars come in order from one publisher, the collector). See ``docs/loop.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from dope.clock import Clock
from dope.errors import UserError
from dope.fileio import file_stamp
from dope.logs import ProblemCounter
from dope.loop.config import LoopConfig
from dope.loop.drift import Drift, PreparedReference, drift_of
from dope.messages import Bar, Features, LateTrades, ModelHealth, Prediction

CLEAR_FRACTION: Final = 0.8
STALE_INTERVALS: Final = 3


class ReferenceLike(Protocol):
    """The reference sample saved with a model (``Registry.reference(model_id)``)."""

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def features(self) -> NDArray[np.float64]: ...

    @property
    def predictions(self) -> NDArray[np.float64]: ...


ReferenceLoader = Callable[[str], ReferenceLike]
"""Model id -> its reference sample; raises ``UserError``/``ValueError``/``OSError`` when it has none."""


@dataclass(frozen=True)
class HealthLevels:
    """Alarm levels and sizes: ``window`` live rows per statistic, a check every ``every`` vectors."""

    drift_psi: float
    drift_ks: float
    window: int
    every: int

    @classmethod
    def of(cls, loop: LoopConfig) -> HealthLevels:
        return cls(loop.drift_psi, loop.drift_ks, loop.drift_window, loop.drift_every)


class ChampionWatch:
    """The registry's champion, re-read only when ``roles.json`` was replaced."""

    def __init__(self, roles_path: Path, read_champion: Callable[[], str | None]) -> None:
        self.roles_path, self.read_champion = roles_path, read_champion
        self._stamp: tuple[int, int] | None = None
        self._champion: str | None = None

    def current(self) -> str | None:
        stamp = file_stamp(self.roles_path)
        if stamp != self._stamp:
            self._champion = self.read_champion()  # a failure raises, and the next call reads again
            self._stamp = stamp
        return self._champion


@dataclass
class SymbolHealth:
    """What the monitor keeps of one symbol (bounded by the window)."""

    window: int
    vectors: deque[list[float]] = field(init=False)
    predictions: deque[float] = field(init=False)
    bars: deque[tuple[int, bool]] = field(init=False)
    interval_ms: int = 0
    last_close_ms: int = 0
    since_check: int = 0
    gaps: int = 0
    empty_bars: int = 0
    late_trades: int = 0
    nonfinite: int = 0
    stale: bool = False
    alarm: bool = False
    alarm_since: int = 0
    reason: str = ""
    feature_names: list[str] = field(default_factory=list)
    psi: list[float] = field(default_factory=list)
    ks: list[float] = field(default_factory=list)
    prediction_psi: float | None = None
    prediction_ks: float | None = None

    def keep_drift(self, names: list[str], features: Drift | None, predictions: Drift | None) -> None:
        """Remember the last check's statistics (none: nothing measured)."""
        self.feature_names = names if features is not None else []
        self.psi = _floats(features.psi) if features is not None else []
        self.ks = _floats(features.ks) if features is not None else []
        self.prediction_psi = _first(predictions.psi) if predictions is not None else None
        self.prediction_ks = _first(predictions.ks) if predictions is not None else None

    def __post_init__(self) -> None:
        self.vectors, self.predictions, self.bars = (deque(maxlen=self.window), deque(maxlen=self.window),
                                                     deque(maxlen=self.window))

    def add_bar(self, bar: Bar) -> None:
        if self.bars and bar.open_time > self.bars[-1][0] + bar.interval_ms:
            self.gaps += (bar.open_time - self.bars[-1][0]) // bar.interval_ms - 1
        if self.bars and bar.open_time <= self.bars[-1][0]:
            return  # a repeat (a publisher's snapshot after a restart): counted once
        self.bars.append((bar.open_time, bar.empty))
        self.empty_bars += bar.empty
        self.interval_ms, self.last_close_ms = bar.interval_ms, max(self.last_close_ms, bar.close_time)

    def gap_rate(self) -> float:
        """Missing open times among those the window's bars span."""
        if len(self.bars) < 2 or not self.interval_ms:
            return 0.0
        expected = (self.bars[-1][0] - self.bars[0][0]) // self.interval_ms + 1
        return (expected - len(self.bars)) / expected

    def empty_rate(self) -> float:
        return sum(empty for _, empty in self.bars) / len(self.bars) if self.bars else 0.0


class HealthMonitor:
    """Per-symbol drift and data quality of the champion's live input (see the module docstring)."""

    def __init__(self, levels: HealthLevels, champion: Callable[[], str | None], load_reference: ReferenceLoader,
                 problems: ProblemCounter, *, clock: Clock | None = None, source: str = "") -> None:
        self.levels, self.champion, self.load_reference = levels, champion, load_reference
        self.problems, self.clock, self.source = problems, clock, source
        self.symbols: dict[str, SymbolHealth] = {}
        self.model_id = ""
        self.reference: ReferenceLike | None = None
        self._prepared: tuple[PreparedReference, PreparedReference | None] | None = None
        self.newest_bar_ms = 0
        self.totals: dict[str, int] = {"bars": 0, "checks": 0, "alarms_raised": 0, "reference_loads": 0}

    # -- input -----------------------------------------------------------------------------------
    def on_features(self, msg: Features) -> list[ModelHealth]:
        state = self._symbol(msg.symbol)
        if state.vectors and len(msg.values) != len(state.vectors[-1]):
            self.problems.report("health_mismatch", f"[{msg.symbol}] vectors went from {len(state.vectors[-1])} "
                                 f"to {len(msg.values)} values: the window starts again")
            state.vectors.clear()
        state.vectors.append(msg.values)
        state.nonfinite += sum(not math.isfinite(v) for v in msg.values)
        state.since_check += 1
        if len(state.vectors) < self.levels.window or state.since_check < self.levels.every:
            return []
        state.since_check = 0
        return [self.check(msg.symbol, msg.event_time)]

    def on_bar(self, bar: Bar) -> list[ModelHealth]:
        state = self._symbol(bar.symbol)
        state.add_bar(bar)
        self.newest_bar_ms = max(self.newest_bar_ms, bar.close_time)
        self.totals["bars"] += 1
        return self.tick()

    def on_late_trades(self, msg: LateTrades) -> None:
        self._symbol(msg.symbol).late_trades += msg.count

    def on_prediction(self, msg: Prediction) -> None:
        state = self._symbol(msg.symbol)
        self.refresh_reference()  # a stat of roles.json: the champion's predictions count from the first one
        if msg.prediction is not None and msg.model_id == self.model_id:
            state.predictions.append(msg.prediction)

    def tick(self) -> list[ModelHealth]:
        """Symbols whose feed became stale or fresh since the last look (call when idle, and per bar)."""
        now = self.clock.now_ms() if self.clock is not None else self.newest_bar_ms
        changed = []
        for symbol, state in self.symbols.items():
            stale = bool(state.interval_ms) and now - state.last_close_ms > STALE_INTERVALS * state.interval_ms
            if stale != state.stale:
                state.stale = stale
                changed.append(self.report(symbol, now if self.clock is None else state.last_close_ms))
        return changed

    # -- drift -----------------------------------------------------------------------------------
    def refresh_reference(self) -> None:
        """Load the champion's reference sample when the champion changed (a failure is counted, logged)."""
        try:
            model_id = self.champion() or ""
        except (UserError, ValueError, OSError) as exc:
            self.problems.report("health_roles", f"cannot read the champion: {exc}")
            return
        if model_id == self.model_id:
            return
        self.model_id, self.reference, self._prepared = model_id, None, None
        for state in self.symbols.values():
            state.predictions.clear()  # another model's predictions
        if not model_id:
            return
        try:
            reference = self.load_reference(model_id)
            predictions = np.asarray(reference.predictions, dtype=np.float64)
            self._prepared = (PreparedReference.of(reference.features),
                              PreparedReference.of(predictions) if len(predictions) else None)
            self.reference = reference
        except (UserError, ValueError, OSError) as exc:
            self.problems.report("health_reference", f"no reference sample for {model_id}: {exc}")
            return
        self.totals["reference_loads"] += 1

    def check(self, symbol: str, event_time: int) -> ModelHealth:
        """Drift of ``symbol``'s window now, the alarm updated, as a message."""
        self.refresh_reference()
        state = self.symbols[symbol]
        features, predictions = self._drift(state)
        self.totals["checks"] += 1
        names = list(self.reference.feature_names) if self.reference is not None else []
        state.keep_drift(names, features, predictions)
        self._update_alarm(symbol, state, event_time, features, predictions)
        return self.report(symbol, event_time)

    def _drift(self, state: SymbolHealth) -> tuple[Drift | None, Drift | None]:
        if self._prepared is None:
            return None, None
        reference, reference_predictions = self._prepared
        live = np.asarray(state.vectors, dtype=np.float64)
        if live.shape[1] != reference.sample.shape[1]:
            self.problems.report("health_mismatch", f"vectors of {live.shape[1]} features, the reference of "
                                 f"{self.model_id} has {reference.sample.shape[1]}: no drift measured")
            return None, None
        features = drift_of(reference, live)
        predictions = None
        if len(state.predictions) >= self.levels.window and reference_predictions is not None:
            predictions = drift_of(reference_predictions, np.asarray(state.predictions))
        return features, predictions

    def _update_alarm(self, symbol: str, state: SymbolHealth, event_time: int, features: Drift | None,
                      predictions: Drift | None) -> None:
        worst, reason = self._worst(features, predictions)
        if not state.alarm and worst > 1:
            state.alarm, state.alarm_since, state.reason = True, event_time, reason
            self.totals["alarms_raised"] += 1
            self.problems.logger.warning("drift alarm on %s for %s: %s", symbol, self.model_id, reason)
        elif state.alarm and (features is None or worst < CLEAR_FRACTION):
            state.alarm, state.alarm_since, state.reason = False, 0, ""

    def _worst(self, features: Drift | None, predictions: Drift | None) -> tuple[float, str]:
        """The largest statistic / level ratio, and what it was (``psi ret_1 = 0.41 > 0.25``)."""
        names = list(self.reference.feature_names) if self.reference is not None else []
        candidates: list[tuple[float, str]] = []
        for label, drift in (("", features), ("prediction ", predictions)):
            if drift is None:
                continue
            for stat, values, level in (("psi", drift.psi, self.levels.drift_psi), ("ks", drift.ks,
                                                                                    self.levels.drift_ks)):
                for i, value in enumerate(values):
                    if math.isfinite(value):
                        what = label + stat if label else f"{stat} {_name(names, i)}"
                        candidates.append((value / level, f"{what} = {value:.3g} > {level:g}"))
        return max(candidates, default=(0.0, ""))

    # -- output ----------------------------------------------------------------------------------
    def report(self, symbol: str, event_time: int) -> ModelHealth:
        """``symbol``'s health now (drift: the last check's) as a message."""
        state = self.symbols[symbol]
        return ModelHealth(
            symbol=symbol, event_time=event_time, source=self.source, model_id=self.model_id,
            window=len(state.vectors), feature_names=state.feature_names, psi=state.psi, ks=state.ks,
            prediction_psi=state.prediction_psi, prediction_ks=state.prediction_ks,
            drift_psi=self.levels.drift_psi, drift_ks=self.levels.drift_ks, gap_rate=state.gap_rate(),
            empty_rate=state.empty_rate(), late_trades=state.late_trades, nonfinite=state.nonfinite,
            stale=state.stale, alarm=state.alarm, alarm_since=state.alarm_since, reason=state.reason)

    def counters(self) -> dict[str, int]:
        """Heartbeat counters (``health.*``): summed or maxed over symbols."""
        states = list(self.symbols.values())
        psi = [v for s in states for v in [*s.psi, s.prediction_psi or 0.0]]
        ks = [v for s in states for v in [*s.ks, s.prediction_ks or 0.0]]
        return {
            "health.drift_alarm": int(any(s.alarm for s in states)),
            "health.max_psi_milli": _milli(psi), "health.max_ks_milli": _milli(ks),
            "health.gaps": sum(s.gaps for s in states), "health.empty_bars": sum(s.empty_bars for s in states),
            "health.late_trades": sum(s.late_trades for s in states),
            "health.stale": sum(s.stale for s in states), "health.nonfinite": sum(s.nonfinite for s in states),
            "health.no_reference": int(self.reference is None),
            **{f"health.{k}": v for k, v in self.totals.items()},
        }

    def _symbol(self, symbol: str) -> SymbolHealth:
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolHealth(self.levels.window)
        return state


def retrain_request(msg: ModelHealth) -> tuple[str, int] | None:
    """What a trainer subscribed to ``health.*`` asks of ``request_retrain(reason, time_ms)``: the alarm's
    reason and the event time it was raised (the same for every message of one alarm), or None."""
    if not msg.alarm:
        return None
    return f"drift on {msg.symbol} ({msg.model_id}): {msg.reason}", msg.alarm_since


def _name(names: list[str], index: int) -> str:
    return names[index] if index < len(names) else f"#{index}"


def _floats(values: NDArray[np.float64]) -> list[float]:
    return [float(v) for v in values]


def _first(values: NDArray[np.float64]) -> float | None:
    value = float(values[0])
    return value if math.isfinite(value) else None


def _milli(values: list[float]) -> int:
    finite = [v for v in values if math.isfinite(v)]
    return round(1000 * max(finite)) if finite else 0

