"""The dynamics of the synthetic market on a step grid: the one implementation behind bars and trades.

Per symbol and step ``k`` of ``dt`` seconds (``how`` = hour of the week):

* log-volatility ``H_k = sum_i h_i,k``, each ``h_i`` an AR(1) with time constant ``tau_i`` and
  stationary variance ``v_i`` (multi-scale stochastic volatility: clustering at every horizon);
* ``sigma_k = sigma_base * vol_season[how] * exp(H_k)``, ``sigma_base`` set so that the
  unconditional variance per step is ``sigma_10s**2 * dt / 10``;
* log-return ``r_k = u_k + mu - sigma_k**2 / 2``, ``u_k = phi u_(k-1) + sqrt(1 - phi**2) sigma_k z_k``
  with ``z_k`` unit-variance Student-t (fat tails), correlated ``leader_corr`` with the leader's ``z``
  (ETH following BTC); the drift ``mu`` and return autocorrelation ``phi`` are 0 unless a regime sets them;
* trade count ``N_k ~ Poisson(lambda_k)``, ``lambda_k = rate * dt * count_season[how] *
  exp(gamma * H_k + a_k)`` normalised to its mean, ``a_k`` a fast AR(1) burst state (a Cox
  process driven by the volatility state and by bursts);
* taker buys ``B_k ~ Binomial(N_k, p_k)``, ``logit p_k = logit p + kappa * z_k + b_k``,
  ``b_k`` a persistent AR(1) imbalance state.

Regimes (``[synthetic] regimes``) switch, from given market times, the drift ``mu``, the return
autocorrelation ``phi`` and multipliers of ``sigma_k`` and ``lambda_k``; without them all are neutral and
the path is bit for bit the calibrated one.

Random numbers come from a generator seeded by ``(seed, symbol, day, dt)``, so a path
depends only on the seed and its start; it is simulated a whole (rest of a) day at a time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from dope.market.config import SyntheticRegime, regime_starts
from dope.market.synthetic_params import SymbolParams
from dope.types import DAY_MS, HOUR_MS, FloatArray, IntArray

STEP_MS = 10_000
_MONDAY_OFFSET_H = 72  # 1970-01-01 was a Thursday
LATENT, TRADES, BARS, INIT = 0, 1, 2, 3


def symbol_key(symbol: str) -> int:
    """A stable 63-bit integer for a symbol (seed material; Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little") >> 1


def stream(seed: int, symbol: str, kind: int, *index: int) -> np.random.Generator:
    """The random generator of one chunk of one kind (latent, trades, bars) of one symbol."""
    return np.random.default_rng(np.random.SeedSequence([seed, symbol_key(symbol), kind, *index]))


def hour_of_week(time_ms: IntArray) -> IntArray:
    """Hour of the week (0 = Monday 00:00 UTC) of epoch-millisecond times."""
    return (time_ms // HOUR_MS + _MONDAY_OFFSET_H) % 168


@dataclass(frozen=True)
class Steps:
    """The latent path of one symbol on its step grid (``x`` = log price)."""

    open_time: IntArray
    sigma: FloatArray
    x_start: FloatArray
    x_end: FloatArray
    count: IntArray
    buys: IntArray

    def __len__(self) -> int:
        return len(self.open_time)

    @staticmethod
    def concat(parts: list[Steps]) -> Steps:
        """The parts end to end."""
        names = ("open_time", "sigma", "x_start", "x_end", "count", "buys")
        return Steps(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


@dataclass
class State:
    """What carries from one step to the next: the AR(1) states, the log price and the last return's noise."""

    h: FloatArray
    burst: float
    imbalance: float
    x: float
    noise: float = 0.0


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _recurse(z: FloatArray, eps: FloatArray, phi: FloatArray, sd: FloatArray, sig_season: FloatArray, cnt_season: FloatArray, prm: FloatArray, regime: FloatArray,
             h: FloatArray, ab: FloatArray, sigma: FloatArray, x_end: FloatArray, lam: FloatArray, prob: FloatArray) -> None:  # pragma: no cover
    """Run the AR(1) states through the steps; ``prm`` = sigma_base, rate*dt, gamma, phi_a, sd_a,
    phi_b, sd_b, logit p, kappa, count norm, x; ``regime[k]`` = vol and rate multipliers, drift, return
    AR coefficient of step k; ``ab`` = burst, imbalance, return noise (updated in place)."""
    x = prm[10]
    u = ab[2]
    n_comp = len(phi)
    for k in range(len(z)):
        total = 0.0
        for i in range(n_comp):
            h[i] = phi[i] * h[i] + sd[i] * eps[k, i]
            total += h[i]
        ab[0] = prm[3] * ab[0] + prm[4] * eps[k, n_comp]
        ab[1] = prm[5] * ab[1] + prm[6] * eps[k, n_comp + 1]
        s = prm[0] * sig_season[k] * math.exp(total) * regime[k, 0]
        ar = regime[k, 3]
        u = ar * u + math.sqrt(1.0 - ar * ar) * s * z[k]
        x += (u + regime[k, 2]) - 0.5 * s * s
        sigma[k] = s
        x_end[k] = x
        lam[k] = prm[1] * cnt_season[k] * math.exp(prm[2] * total + ab[0] - prm[9]) * regime[k, 1]
        prob[k] = 1.0 / (1.0 + math.exp(-(prm[7] + prm[8] * z[k] + ab[1])))
    ab[2] = u


class SymbolModel:
    """The seeded dynamics of one symbol on a grid of ``step_ms`` steps."""

    def __init__(self, symbol: str, params: SymbolParams, seed: int, *, step_ms: int = STEP_MS,
                 leader: SymbolParams | None = None, rate_scale: float = 1.0,
                 regimes: Sequence[SyntheticRegime] = ()) -> None:
        if DAY_MS % step_ms:
            raise ValueError(f"step {step_ms} ms does not divide a day")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.symbol, self.params, self.seed, self.step_ms = symbol, params, seed, step_ms
        self.leader = leader if params.leader and params.leader_corr != 0.0 else None
        self._dt = step_ms / 1000.0
        self._phi, self._sd = self._ar(params.vol_taus_s, params.vol_vars)
        self._prm = self._constants(params, rate_scale)
        self._sig_season = np.asarray(params.vol_season, dtype=np.float64)
        self._cnt_season = np.asarray(params.count_season, dtype=np.float64)
        self._regime_starts, self._regime_table = self._regimes(regimes)

    def _ar(self, taus: list[float], variances: list[float]) -> tuple[FloatArray, FloatArray]:
        phi = np.exp(-self._dt / np.asarray(taus, dtype=np.float64))
        return phi, np.sqrt(np.asarray(variances, dtype=np.float64) * (1.0 - phi**2))

    def _regimes(self, regimes: Sequence[SyntheticRegime]) -> tuple[IntArray, FloatArray]:
        """Regime start times, and one row per regime (the calibrated market first): vol and rate
        multipliers, drift per step, return AR coefficient."""
        starts = np.array(regime_starts(regimes), dtype=np.int64)
        per_step = self.step_ms / DAY_MS
        rows = [[1.0, 1.0, 0.0, 0.0]] + [[r.vol_scale, r.rate_scale, r.drift * per_step, r.autocorr]
                                          for r in regimes]
        return starts, np.array(rows, dtype=np.float64)

    def _regime_rows(self, open_time: IntArray) -> FloatArray:
        """The regime row of each step (see :meth:`_regimes`)."""
        return self._regime_table[np.searchsorted(self._regime_starts, open_time, side="right")]

    def _constants(self, p: SymbolParams, rate_scale: float) -> FloatArray:
        phi_a, sd_a = self._ar([p.burst_tau_s], [p.burst_var])
        phi_b, sd_b = self._ar([p.imbalance_tau_s], [p.imbalance_var])
        total_var = float(np.sum(p.vol_vars))
        sigma_base = p.sigma_10s * math.sqrt(self._dt / 10.0) * math.exp(-total_var)
        norm = 0.5 * (p.count_vol_elasticity**2 * total_var + p.burst_var)
        logit = math.log(p.taker_buy_share / (1.0 - p.taker_buy_share))
        return np.array([sigma_base, p.trade_rate * self._dt * rate_scale, p.count_vol_elasticity,
                         phi_a[0], sd_a[0], phi_b[0], sd_b[0], logit, p.imbalance_return_beta, norm, 0.0])

    def initial_state(self) -> State:
        """The stationary start: AR states drawn from their stationary laws (seeded), price at start_price."""
        rng = stream(self.seed, self.symbol, INIT)
        p = self.params
        h = rng.standard_normal(len(p.vol_vars)) * np.sqrt(np.asarray(p.vol_vars, dtype=np.float64))
        burst, imbalance = rng.standard_normal(2) * np.sqrt([p.burst_var, p.imbalance_var])
        return State(h, float(burst), float(imbalance), math.log(p.start_price), 0.0)

    def simulate_day(self, state: State, from_ms: int) -> Steps:
        """The steps from ``from_ms`` (on the grid) to the end of its UTC day; advances ``state``."""
        day, first = divmod(from_ms, DAY_MS)
        n_day = DAY_MS // self.step_ms
        i0 = first // self.step_ms
        rng = stream(self.seed, self.symbol, LATENT, day, self.step_ms)
        z = self._innovations(rng, day, n_day)[i0:]
        eps = rng.standard_normal((n_day, len(self._phi) + 2))[i0:]
        open_time = day * DAY_MS + self.step_ms * np.arange(i0, n_day, dtype=np.int64)
        sigma, x_end, lam, prob = self._run(z, eps, open_time, state)
        count = rng.poisson(lam)
        buys = rng.binomial(count, prob)
        return self._steps(open_time, sigma, x_end, count, buys, state)

    def _innovations(self, rng: np.random.Generator, day: int, n_day: int) -> FloatArray:
        own = _unit_t(rng, self.params.tail_dof, n_day)
        if self.leader is None:
            return own
        lead_rng = stream(self.seed, self.params.leader, LATENT, day, self.step_ms)
        rho = self.params.leader_corr
        return rho * _unit_t(lead_rng, self.leader.tail_dof, n_day) + math.sqrt(1.0 - rho * rho) * own

    def _run(self, z: FloatArray, eps: FloatArray, open_time: IntArray, state: State) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        how = hour_of_week(open_time)
        n = len(z)
        sigma, x_end, lam, prob = (np.empty(n) for _ in range(4))
        prm = self._prm.copy()
        prm[10] = state.x
        ab = np.array([state.burst, state.imbalance, state.noise])
        _recurse(z, eps, self._phi, self._sd, self._sig_season[how], self._cnt_season[how], prm,
                 self._regime_rows(open_time), state.h, ab, sigma, x_end, lam, prob)
        state.burst, state.imbalance, state.noise = float(ab[0]), float(ab[1]), float(ab[2])
        return sigma, x_end, lam, prob

    @staticmethod
    def _steps(open_time: IntArray, sigma: FloatArray, x_end: FloatArray, count: IntArray, buys: IntArray, state: State) -> Steps:
        x_start = np.empty_like(x_end)
        x_start[0] = state.x
        x_start[1:] = x_end[:-1]
        state.x = float(x_end[-1])
        return Steps(open_time, sigma, x_start, x_end, count.astype(np.int64), buys.astype(np.int64))

    def simulate(self, state: State, from_ms: int, until_ms: int) -> Steps:
        """Whole rest-of-day chunks from ``from_ms`` until they cover ``until_ms`` (may overshoot)."""
        parts = [self.simulate_day(state, from_ms)]
        t = (from_ms // DAY_MS + 1) * DAY_MS
        while t < until_ms:
            parts.append(self.simulate_day(state, t))
            t += DAY_MS
        return Steps.concat(parts)


def _unit_t(rng: np.random.Generator, dof: float, n: int) -> FloatArray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(dof, n) * math.sqrt((dof - 2.0) / dof)
