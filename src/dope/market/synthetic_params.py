"""Parameters of the synthetic market, one set per symbol, fitted on real Binance data.

The fitted values live in ``dope/data/synthetic_params.json`` (written by
``dope synth --calibrate``, committed); :func:`load_params` reads them and
:meth:`SyntheticParams.for_symbol` gives any symbol a set (a symbol that was
not fitted gets BTCUSDT's dynamics, scaled to a 100-USDT coin).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

import msgspec

from dope.errors import UserError

HOURS_PER_WEEK: Final = 168
DEFAULT_PARAMS_FILE: Final = "synthetic_params.json"
_REFERENCE: Final = "BTCUSDT"


class ParamsError(UserError, ValueError):
    """The synthetic-market parameter file is missing, malformed or inconsistent."""


class SymbolParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The dynamics of one symbol (times in seconds, volatilities as log-return standard deviations).

    ``vol_season``/``count_season`` hold 168 multipliers, one per hour of the
    week (Monday 00:00 UTC first). ``vol_taus_s``/``vol_vars`` are the time
    constants and stationary variances of the log-volatility components.
    """

    tick_size: float
    step_size: float
    start_price: float
    sigma_10s: float
    tail_dof: float
    vol_taus_s: list[float]
    vol_vars: list[float]
    vol_season: list[float]
    trade_rate: float
    count_season: list[float]
    count_vol_elasticity: float
    burst_var: float
    burst_tau_s: float
    mean_trade_size: float
    size_log_sd: float
    taker_buy_share: float
    imbalance_return_beta: float
    imbalance_var: float
    imbalance_tau_s: float
    leader: str = ""
    leader_corr: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(self, ("tick_size", "step_size", "start_price", "sigma_10s", "trade_rate",
                               "mean_trade_size", "burst_tau_s", "imbalance_tau_s"))
        if self.tail_dof <= 2.0:
            raise ValueError(f"tail_dof must be > 2 (finite variance), got {self.tail_dof}")
        if len(self.vol_taus_s) != len(self.vol_vars) or not self.vol_taus_s:
            raise ValueError("vol_taus_s and vol_vars must be non-empty and of equal length")
        if len(self.vol_season) != HOURS_PER_WEEK or len(self.count_season) != HOURS_PER_WEEK:
            raise ValueError(f"vol_season and count_season need {HOURS_PER_WEEK} values (hours of the week)")
        if not 0.0 < self.taker_buy_share < 1.0 or not -1.0 < self.leader_corr < 1.0:
            raise ValueError("taker_buy_share must be in (0, 1) and leader_corr in (-1, 1)")


class SyntheticParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fitted parameters of every calibrated symbol, and where they came from."""

    symbols: dict[str, SymbolParams]
    source: str = ""
    scaling_rule: str = ""

    def for_symbol(self, symbol: str) -> SymbolParams:
        """The fitted parameters of ``symbol``, or defaults derived from BTCUSDT's."""
        if symbol in self.symbols:
            return self.symbols[symbol]
        if _REFERENCE not in self.symbols:
            raise ParamsError(f"no parameters for {symbol} and no {_REFERENCE} to derive defaults from")
        return derived_params(self.symbols[_REFERENCE])


def derived_params(reference: SymbolParams) -> SymbolParams:
    """Defaults for an unfitted symbol: the reference's dynamics on a 100-USDT coin, 1.3x as volatile,
    a quarter of the trades, same notional per trade, no leader."""
    notional = reference.mean_trade_size * reference.start_price
    return msgspec.structs.replace(
        reference, tick_size=0.01, step_size=0.001, start_price=100.0, sigma_10s=reference.sigma_10s * 1.3,
        trade_rate=reference.trade_rate / 4, mean_trade_size=notional / 100.0, leader="", leader_corr=0.0,
    )


def load_params(path: str | Path | None = None) -> SyntheticParams:
    """Read the parameter file (default: the one committed with the package)."""
    try:
        data = Path(path).read_bytes() if path is not None else _bundled().read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"synthetic parameter file not found: {path}") from None
    try:
        return msgspec.json.decode(data, type=SyntheticParams)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ParamsError(f"bad synthetic parameter file {path or DEFAULT_PARAMS_FILE}: {exc}") from None


def save_params(params: SyntheticParams, path: str | Path) -> None:
    """Write ``params`` as indented JSON (stable key order, so diffs stay readable)."""
    text = msgspec.json.format(msgspec.json.encode(params), indent=1)
    Path(path).write_bytes(text + b"\n")


def bundled_params_path() -> Path:
    """Path of the committed parameter file inside the package."""
    return Path(str(_bundled()))


def _bundled() -> Path:
    return Path(str(resources.files("dope").joinpath("data", DEFAULT_PARAMS_FILE)))


def _check_positive(params: SymbolParams, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(params, name)
        if not value > 0.0:
            raise ValueError(f"{name} must be > 0, got {value}")
