"""The promotion gate: a pre-registered paired test of a candidate model against the champion.

Over the same ``n`` bars scored by both, with forecast errors ``e`` (prediction - realised):

* **Loss differential** ``d_t = L(e_champion_t) - L(e_candidate_t)`` with ``L`` the squared (default) or
  absolute error, so ``d > 0`` on bars where the candidate did better.
* **Diebold–Mariano** (1995) statistic ``DM = mean(d) / sqrt(S / n)`` where ``S`` is the Newey–West
  (1987) long-run variance of ``d``: ``S = g_0 + 2 sum_{k=1..L} (1 - k/(L+1)) g_k`` (Bartlett kernel,
  ``g_k = (1/n) sum_t (d_t - mean)(d_{t-k} - mean)``). The lag ``L`` defaults to
  ``max(floor(1.3 sqrt(n)), horizon - 1)`` (Lazarus, Lewis, Stock & Watson 2018; 41 at 1,000 bars, 130 at
  10,000): the textbook ``floor(4 (n/100)^(2/9))`` (Newey & West 1994) is too short for persistent
  loss differentials: it promoted 7.5% of equal-skill candidates at a 5% level in our simulation
  (docs/loop.md).
* **Reference distribution** (an approximation of the fixed-b theory of Kiefer & Vogelsang 2005, with
  ``b = (L + 1) / n``): ``S`` is divided by ``1 - b + b^2/3``, the mean of the Bartlett estimator's
  fixed-b limit (demeaning biases it down), and DM is read against Student's t with
  ``nu = 1.5 n / (L + 1) = 1.5 / b`` degrees of freedom, the estimator's equivalent degrees of freedom.
* **Harvey–Leybourne–Newbold** (1997) small-sample correction (on by default): ``DM`` is scaled by
  ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` with ``h = horizon`` (HLN's own ``n - 1`` degrees of freedom
  are replaced by the smaller ``nu`` above).
* **One-sided**: ``p = P(t_nu > DM)`` (H1: the candidate's expected loss is lower).
* **Deflation** for the ``n_candidates`` tried since the last promotion (this one included): the
  candidate passes when ``p <= level / n_candidates`` (Bonferroni, the default) or
  ``p <= 1 - (1 - level)^(1/n_candidates)`` (Šidák). Holm's step-down would test the smallest p-value
  of the batch against ``level / n_candidates`` too, and the loop promotes at most one candidate per
  batch, so it gives the same decision as Bonferroni; only its later steps differ.
* **P&L guard**: the candidate's mean per-bar strategy P&L may fall short of the champion's by at most
  ``max_pnl_shortfall`` (in the P&L's own units per bar).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> champion = rng.normal(0.0, 1.0, 2000)
>>> candidate = 0.5 * champion  # half the error on every bar
>>> pnl = np.zeros(2000)
>>> decision = promotion_test(candidate, champion, pnl, pnl)
>>> decision.passed, decision.reason
(True, 'passed')
>>> promotion_test(champion, champion, pnl, pnl).reason
'no loss difference'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from dope.types import FloatArray

Loss = Literal["squared", "absolute"]
Deflation = Literal["bonferroni", "sidak", "none"]
MIN_BARS_FLOOR: Final = 100
"""The least ``min_bars`` a configuration may ask for (HAC variances and the normal limit need it)."""


class GateInputError(ValueError):
    """The paired scores cannot be tested (NaN, mismatched lengths, too few bars); the message says which."""


@dataclass(frozen=True)
class GateConfig:
    """The pre-registered test: fixed before any candidate is scored."""

    level: float = 0.05
    """The family-wise false promotion rate the deflated threshold keeps."""
    loss: Loss = "squared"
    min_bars: int = 500
    """Paired bars needed before the test may run."""
    lag: int | None = None
    """Newey–West lag; ``None``: ``max(floor(1.3 sqrt(n)), horizon - 1)``."""
    horizon: int = 1
    """Forecast horizon in bars, for the HLN correction."""
    small_sample: bool = True
    """Apply the Harvey–Leybourne–Newbold correction."""
    deflation: Deflation = "bonferroni"
    max_pnl_shortfall: float = 0.0
    """How much lower the candidate's mean per-bar P&L may be than the champion's."""

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {self.level}")
        if self.min_bars < MIN_BARS_FLOOR:
            raise ValueError(f"min_bars must be at least {MIN_BARS_FLOOR}, got {self.min_bars}")
        if self.lag is not None and self.lag < 0:
            raise ValueError(f"lag must be >= 0, got {self.lag}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 bar, got {self.horizon}")
        if self.loss not in ("squared", "absolute"):
            raise ValueError(f"unknown loss {self.loss!r}: expected 'squared' or 'absolute'")
        if self.deflation not in ("bonferroni", "sidak", "none"):
            raise ValueError(f"unknown deflation {self.deflation!r}: expected 'bonferroni', 'sidak' or 'none'")
        if not self.max_pnl_shortfall >= 0.0:
            raise ValueError(f"max_pnl_shortfall must be >= 0, got {self.max_pnl_shortfall}")


class GateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one promotion test and the evidence it rests on."""

    passed: bool
    reason: str
    """``passed``, ``no loss difference``, ``not significant`` or ``P&L guard``."""
    statistic: float
    """The (HLN-corrected) DM statistic; positive favours the candidate."""
    p_value: float
    threshold: float
    """The deflated level the p-value was held against."""
    n_bars: int
    n_candidates: int
    lag: int
    mean_loss_diff: float
    """Mean of champion loss minus candidate loss per bar."""
    pnl_diff: float
    """Mean per-bar P&L of the candidate minus the champion's."""


def promotion_test(candidate_errors: npt.ArrayLike, champion_errors: npt.ArrayLike,
                   candidate_pnl: npt.ArrayLike, champion_pnl: npt.ArrayLike, *, n_candidates: int = 1,
                   config: GateConfig | None = None) -> GateDecision:
    """Test whether the candidate beats the champion over the same bars (errors = prediction - realised)."""
    cfg = config or GateConfig()
    arrays = _paired(candidate_errors, champion_errors, candidate_pnl, champion_pnl, cfg.min_bars)
    if n_candidates < 1:
        raise GateInputError(f"n_candidates counts this candidate too, so it is >= 1, got {n_candidates}")
    diff = loss(arrays[1], cfg.loss) - loss(arrays[0], cfg.loss)
    n = diff.size
    lag = default_lag(n, cfg.horizon) if cfg.lag is None else cfg.lag
    statistic, p_value = _dm(diff, lag, cfg)
    threshold = deflated_level(cfg.level, n_candidates, cfg.deflation)
    pnl_diff = float(arrays[2].mean() - arrays[3].mean())
    reason = _reason(not diff.any(), p_value, threshold, pnl_diff, cfg.max_pnl_shortfall)
    return GateDecision(passed=reason == "passed", reason=reason, statistic=statistic, p_value=p_value,
                        threshold=threshold, n_bars=n, n_candidates=n_candidates, lag=lag,
                        mean_loss_diff=float(diff.mean()), pnl_diff=pnl_diff)


def loss(errors: FloatArray, kind: Loss) -> FloatArray:
    """Per-bar loss of forecast errors."""
    return errors * errors if kind == "squared" else np.abs(errors)


def default_lag(n: int, horizon: int = 1) -> int:
    """The gate's Bartlett lag: ``max(floor(1.3 sqrt(n)), horizon - 1)`` (Lazarus, Lewis, Stock & Watson 2018)."""
    return max(int(math.floor(1.3 * math.sqrt(n))), horizon - 1)


def degrees_of_freedom(n: int, lag: int) -> float:
    """Equivalent degrees of freedom of a Bartlett long-run variance with ``lag`` over ``n`` bars."""
    return 1.5 * n / (lag + 1)


def newey_west_lag(n: int) -> int:
    """Newey & West's (1994) rule of thumb for the Bartlett lag: ``floor(4 (n/100)^(2/9))``."""
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


def newey_west_variance(values: FloatArray, lag: int) -> float:
    """Long-run variance of ``values`` with the Bartlett kernel (autocovariances divided by ``n``)."""
    n = values.size
    if lag >= n:
        raise GateInputError(f"the Newey–West lag {lag} must be below the {n} bars")
    d = values - values.mean()
    total = float(d @ d)
    for k in range(1, lag + 1):
        total += 2.0 * (1.0 - k / (lag + 1.0)) * float(d[k:] @ d[:-k])
    return total / n


def hln_factor(n: int, horizon: int) -> float:
    """Harvey, Leybourne & Newbold's (1997) small-sample scaling of the DM statistic."""
    return math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)


def deflated_level(level: float, n_candidates: int, deflation: Deflation) -> float:
    """The per-test threshold keeping the family-wise rate of ``n_candidates`` tests at ``level``."""
    if deflation == "bonferroni":
        return level / n_candidates
    if deflation == "sidak":
        return float(1.0 - (1.0 - level) ** (1.0 / n_candidates))
    return level


def _dm(diff: FloatArray, lag: int, cfg: GateConfig) -> tuple[float, float]:
    """One-sided DM statistic and p-value. A differential that does not vary gives 0 (p = 1/2) when it is
    zero and an infinite statistic (p = 0 or 1) when it is a constant."""
    n = diff.size
    mean = float(diff.mean())
    b = (lag + 1) / n
    variance = newey_west_variance(diff, lag) / (1.0 - b + b * b / 3.0)
    scale = float(np.abs(diff).max())
    if scale == 0.0 or variance <= (1e-12 * scale) ** 2:
        # identical losses, or a differential constant to rounding: no evidence either way from dispersion
        statistic = 0.0 if abs(mean) <= 1e-12 * scale else math.copysign(math.inf, mean)
    else:
        statistic = mean / math.sqrt(variance / n)
        if cfg.small_sample:
            statistic *= hln_factor(n, cfg.horizon)
    from scipy.special import stdtr  # here: the config of every service imports this module

    p_value = float(stdtr(degrees_of_freedom(n, lag), -statistic))
    return statistic, p_value


def _reason(identical: bool, p_value: float, threshold: float, pnl_diff: float, shortfall: float) -> str:
    if identical:
        return "no loss difference"
    if p_value > threshold:
        return "not significant"
    if pnl_diff < -shortfall:
        return "P&L guard"
    return "passed"


def _paired(candidate: npt.ArrayLike, champion: npt.ArrayLike, candidate_pnl: npt.ArrayLike,
            champion_pnl: npt.ArrayLike, min_bars: int) -> tuple[FloatArray, ...]:
    named = {"candidate errors": candidate, "champion errors": champion, "candidate P&L": candidate_pnl,
             "champion P&L": champion_pnl}
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in named.items()}
    for name, a in arrays.items():
        if a.ndim != 1:
            raise GateInputError(f"{name} must be one value per bar (1-d), got shape {a.shape}")
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise GateInputError(f"{name} hold {bad} NaN or infinite value(s): pair only bars both models scored")
    sizes = {name: a.size for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise GateInputError(f"paired series differ in length: {sizes}")
    n = next(iter(sizes.values()))
    if n < min_bars:
        raise GateInputError(f"{n} paired bars are too few: the gate needs at least {min_bars}")
    return tuple(arrays.values())
