"""The loop's settings (section ``[loop]``): what is retrained when, how candidates are judged, drift alarms.

Its own type, composed by :class:`dope.config.DopeConfig`: this package does not import the
application-wide configuration. Durations are strings (``6h``, ``30d``) read by
:func:`dope.timeparse.parse_duration`. Unknown fields are an error.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from dope.errors import UserError
from dope.loop.gate import GateConfig
from dope.timeparse import parse_duration


class LoopConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The DataOps loop (``docs/loop.md``): off unless ``enabled``; run by the ``trainer`` service.

    Retraining: every ``retrain_every`` of market time (and early on a drift alarm), each kind in
    ``kinds`` (empty: the champion's kind) is fitted on ``symbol``'s stored bars (empty: the
    collector's first symbol) over the last ``train_window`` (``rolling``) or everything stored
    (``expanding``), with ``folds`` walk-forward folds and ``params[kind]``, in a child process at
    ``nice`` (or on the Dask scheduler at ``scheduler``), killed after ``fit_timeout``.

    Judging: a candidate scores live as a shadow; after ``min_bars`` paired bars the pre-registered
    gate (``level``, ``loss``, ``deflation``, ``max_pnl_shortfall``) compares it with the champion.
    ``mode``: ``auto`` promotes when the test passes, ``propose`` writes a proposal that ``dope models
    approve ID`` applies, ``off`` only records the test. A candidate still failing after
    ``max_candidate_bars`` is rejected. After a promotion the previous champion keeps scoring for
    ``rollback_bars`` (0: ``min_bars``) and is restored if it wins the same test. ``keep`` versions
    per kind are kept; older losers are retired.

    ``barrier`` (replayed and synthetic sources under ``dope up``): the trainer holds the source at each
    checkpoint, so fits, gate tests and role changes happen at the same bar in every run; off, fits run
    while bars flow and roles change when a fit ends (the live exchange never waits).

    Monitors: a feature's PSI above ``drift_psi`` or KS statistic above ``drift_ks``, over the last
    ``drift_window`` vectors against ``reference_rows`` saved with the model (measured every
    ``drift_every`` vectors by the decoy's monitor, ``dope.loop.health``), raises a drift alarm
    (and, with ``retrain_on_drift``, an early retrain, at most one per ``min_retrain_gap`` of market time).
    """

    enabled: bool = False
    kinds: tuple[str, ...] = ()
    symbol: str = ""
    retrain_every: str = "6h"
    train_window: str = "30d"
    window: Literal["rolling", "expanding"] = "rolling"
    min_train_bars: int = 1_000
    folds: int = 3
    params: dict[str, dict[str, Any]] = {}
    nice: int = 10
    scheduler: str = ""
    fit_timeout: str = "30m"
    mode: Literal["auto", "propose", "off"] = "auto"
    min_bars: int = 500
    level: float = 0.05
    loss: Literal["squared", "absolute"] = "squared"
    deflation: Literal["bonferroni", "sidak", "none"] = "bonferroni"
    max_pnl_shortfall: float = 0.0
    max_candidate_bars: int = 5_000
    rollback_bars: int = 0
    keep: int = 3
    drift_psi: float = 0.25
    drift_ks: float = 0.25
    drift_window: int = 500
    drift_every: int = 50
    reference_rows: int = 2_000
    min_retrain_gap: str = "1h"
    barrier: bool = True
    retrain_on_drift: bool = True
    service_name: str = "trainer"

    def __post_init__(self) -> None:
        for name in ("retrain_every", "train_window", "fit_timeout", "min_retrain_gap"):
            try:
                parse_duration(getattr(self, name))
            except UserError as exc:
                raise ValueError(f"loop.{name}: {exc}") from None
        positive = {"min_train_bars": self.min_train_bars, "folds": self.folds, "keep": self.keep,
                    "drift_window": self.drift_window, "drift_every": self.drift_every, "reference_rows": self.reference_rows,
                    "max_candidate_bars": self.max_candidate_bars}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"loop.{name} must be >= 1, got {value}")
        if not -20 <= self.nice <= 19:
            raise ValueError(f"loop.nice must lie in [-20, 19], got {self.nice}")
        if self.rollback_bars < 0:
            raise ValueError(f"loop.rollback_bars must be >= 0, got {self.rollback_bars}")
        if self.drift_psi <= 0 or not 0 < self.drift_ks <= 1:
            raise ValueError(f"loop.drift_psi must be > 0 and loop.drift_ks in (0, 1], got "
                             f"{self.drift_psi} and {self.drift_ks}")
        self.gate()  # the gate's own checks, with the field names of this section

    def gate(self, horizon: int = 1) -> GateConfig:
        """The pre-registered test these settings describe."""
        try:
            return GateConfig(level=self.level, loss=self.loss, min_bars=self.min_bars, horizon=horizon,
                              deflation=self.deflation, max_pnl_shortfall=self.max_pnl_shortfall)
        except ValueError as exc:
            raise ValueError(f"loop: {exc}") from None

    @property
    def retrain_every_ms(self) -> int:
        return parse_duration(self.retrain_every)

    @property
    def train_window_ms(self) -> int:
        return parse_duration(self.train_window)

    @property
    def fit_timeout_ms(self) -> int:
        return parse_duration(self.fit_timeout)

    @property
    def min_retrain_gap_ms(self) -> int:
        return parse_duration(self.min_retrain_gap)
