"""Regimes of the synthetic market: the config, what each field changes at the switch, and that a model
fitted before a switch is measurably worse after it than one refitted after it (what the DataOps loop finds)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dope.config import ConfigError, SyntheticRegime, config_from_dict, load_config
from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import Trade
from dope.services.sources import open_source
from dope.training.pipeline import model_factory

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000
DAY = 86_400_000
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regimes.toml"


def _returns(bars: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(bars["close"].to_numpy()))


def _lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x[1:] * x[:-1]).mean() / x.var())


def _regimes(*regimes: dict[str, object]) -> list[dict[str, object]]:
    return [{"start": "2024-01-01T06:00", **r} for r in regimes]


@pytest.mark.parametrize(("regime", "message"), [
    ({"vol_scale": 0.0}, r"vol_scale must be > 0, got 0.0 - at `\$.synthetic.regimes\[0\]`"),
    ({"rate_scale": -1.0}, r"rate_scale must be > 0"),
    ({"autocorr": 1.0}, r"autocorr must be in \(-1, 1\), got 1.0"),
    ({"drift": float("nan")}, r"drift must be finite"),
    ({"start": "yesterday"}, r"start: bad time 'yesterday'"),
    ({"volscale": 2.0}, r"unknown field `volscale`"),
])
def test_a_bad_regime_is_an_error_naming_its_field(regime: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"synthetic": {"regimes": _regimes(regime)}})


def test_regimes_must_come_in_time_order() -> None:
    regimes = [{"start": T0 + HOUR}, {"start": "2024-01-01T00:30"}]
    with pytest.raises(ConfigError, match="starts must strictly increase"):
        config_from_dict({"synthetic": {"regimes": regimes}})
    with pytest.raises(ValueError, match="starts must strictly increase"):
        generate_bars(["BTCUSDT"], T0, T0 + HOUR, regimes=[SyntheticRegime(start=T0), SyntheticRegime(start=T0)])


def test_the_example_config_reads_into_regimes() -> None:
    regimes = load_config(EXAMPLE).synthetic.regimes
    assert [r.start_ms for r in regimes] == [T0, T0 + 6 * HOUR]
    assert regimes[0].autocorr > 0 > regimes[1].autocorr and regimes[1].vol_scale != 1.0


def test_a_neutral_regime_changes_nothing_and_a_regime_nothing_before_it() -> None:
    plain = generate_bars(["BTCUSDT"], T0, T0 + 2 * HOUR, seed=4)["BTCUSDT"]
    neutral = generate_bars(["BTCUSDT"], T0, T0 + 2 * HOUR, seed=4,
                            regimes=[SyntheticRegime(start=T0 + HOUR)])["BTCUSDT"]
    pd.testing.assert_frame_equal(plain, neutral, check_exact=True)
    later = generate_bars(["BTCUSDT"], T0, T0 + 2 * HOUR, seed=4,
                          regimes=[SyntheticRegime(start=T0 + HOUR, autocorr=0.5)])["BTCUSDT"]
    before = plain["open_time"] < T0 + HOUR
    pd.testing.assert_frame_equal(plain[before], later[before], check_exact=True)
    assert not np.array_equal(plain["close"][~before], later["close"][~before])


def test_drift_adds_exactly_its_log_return_per_day() -> None:
    """The same draws with and without drift: the log closes differ by drift x elapsed days (to a tick)."""
    start = T0 + HOUR
    plain = generate_bars(["BTCUSDT"], T0, T0 + 7 * HOUR, seed=2)["BTCUSDT"]
    drifting = generate_bars(["BTCUSDT"], T0, T0 + 7 * HOUR, seed=2,
                             regimes=[SyntheticRegime(start=start, drift=0.05)])["BTCUSDT"]
    steps = (plain["open_time"].to_numpy() - start) // 10_000 + 1
    expected = 0.05 * np.maximum(steps, 0) * 10_000 / DAY
    gap = np.log(drifting["close"].to_numpy()) - np.log(plain["close"].to_numpy())
    np.testing.assert_allclose(gap, expected, rtol=0, atol=1e-6)  # tick 0.01 at ~42,000: 2.4e-7


@pytest.fixture(scope="module")
def switched() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Twelve hours of 10 s bars: AR +0.3 for six hours, then AR -0.3 with 1.5x volatility and half the
    trades; and the calibrated market on the same seed."""
    regimes = [SyntheticRegime(start=T0, autocorr=0.3),
               SyntheticRegime(start=T0 + 6 * HOUR, autocorr=-0.3, vol_scale=1.5, rate_scale=0.5)]
    with_switch = generate_bars(["BTCUSDT"], T0, T0 + 12 * HOUR, seed=9, regimes=regimes)["BTCUSDT"]
    return with_switch, generate_bars(["BTCUSDT"], T0, T0 + 12 * HOUR, seed=9)["BTCUSDT"]


def test_volatility_and_trade_rate_change_by_their_factors(switched: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Against the calibrated market on the same draws (the volatility state is shared), after the switch."""
    bars, plain = switched
    after = (bars["open_time"] >= T0 + 6 * HOUR).to_numpy()
    vol_ratio = _returns(bars[after]).std() / _returns(plain[after]).std()
    assert vol_ratio == pytest.approx(1.5, rel=0.1)
    assert bars["count"][after].sum() / plain["count"][after].sum() == pytest.approx(0.5, rel=0.03)
    before = ~after
    assert _returns(bars[before]).std() / _returns(plain[before]).std() == pytest.approx(1.0, rel=0.1)
    assert bars["count"][before].sum() == plain["count"][before].sum()


def test_return_autocorrelation_flips_at_the_switch(switched: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bars, plain = switched
    after = (bars["open_time"] >= T0 + 6 * HOUR).to_numpy()
    assert _lag1(_returns(bars[~after])) == pytest.approx(0.3, abs=0.08)
    assert _lag1(_returns(bars[after])) == pytest.approx(-0.3, abs=0.08)
    assert abs(_lag1(_returns(plain))) < 0.05


def _post_switch_losses(kind: str, params: dict[str, object], regimes: list[SyntheticRegime],
                        time_of_day: bool, seed: int = 0) -> tuple[float, float, float]:
    """Mean squared error on the last 2 h of 10 h of 10 s bars (switch at 4 h) of a model fitted on the 4 h
    before the switch, of one fitted on the next 4 h, and of the zero forecast."""
    switch = T0 + 4 * HOUR
    bars = generate_bars(["BTCUSDT"], T0, T0 + 10 * HOUR, seed=seed, regimes=regimes)["BTCUSDT"]
    X, y, times = training_matrix(bars, default_feature_set(10_000, time_of_day=time_of_day), horizon=1)
    before = times < switch - 10_000  # the target of the last row before the switch ends at the switch
    test = times >= switch + 4 * HOUR
    after = (times >= switch) & (times < switch + 4 * HOUR - 10_000)
    make = model_factory(kind, params)
    old, new = make(), make()
    old.fit(X[before], y[before])
    new.fit(X[after], y[after])
    old_loss, new_loss = (float(np.mean((m.predict_many(X[test]) - y[test]) ** 2)) for m in (old, new))
    return old_loss, new_loss, float(np.mean(y[test] ** 2))


MODELS = [("ridge", {}, False), ("random_forest", {"n_estimators": 50, "n_jobs": 1, "seed": 0}, True)]
"""Kind, parameters, time-of-day features: a ridge leaves them out (over hours they are a trend it extrapolates)."""
SWITCH = [SyntheticRegime(start=T0, autocorr=0.3),
          SyntheticRegime(start=T0 + 4 * HOUR, autocorr=-0.3, vol_scale=1.5, rate_scale=0.5)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("kind", "params", "time_of_day"), MODELS)
def test_a_model_fitted_before_the_switch_loses_to_one_refitted_after(kind: str, params: dict[str, object],
                                                                     time_of_day: bool, seed: int) -> None:
    """The loop's premise, with the project's own features and models."""
    old, new, zero = _post_switch_losses(kind, params, SWITCH, time_of_day, seed)
    assert old > 1.05 * zero and new < 0.99 * zero and old > 1.1 * new, (old / zero, new / zero)
    old_unswitched, _, zero_unswitched = _post_switch_losses(kind, params, SWITCH[:1], time_of_day, seed)
    assert old_unswitched < 0.99 * zero_unswitched  # without the switch the old model keeps its skill


def test_synth_command_and_collector_source_follow_the_configured_regimes(tmp_path: Path) -> None:
    from dope.cli import main
    from dope.store import BarStore

    config = tmp_path / "dope.toml"
    config.write_text('[synthetic]\nseed = 3\nstart = "2024-01-01"\nduration = "1h"\nrate_scale = 0.05\n'
                      '[[synthetic.regimes]]\nstart = "2024-01-01T00:30"\nautocorr = -0.5\nrate_scale = 3.0\n'
                      '[collector]\nsource = "synthetic"\nsymbols = ["BTCUSDT"]\n')
    assert main(["synth", "BTCUSDT", "--config", str(config), "--store", str(tmp_path / "store")]) == 0
    stored = BarStore(tmp_path / "store").read_bars("BTCUSDT", 10_000, None, None)
    regimes = load_config(config).synthetic.regimes
    expected = generate_bars(["BTCUSDT"], T0, T0 + HOUR, seed=3, rate_scale=0.05, regimes=regimes)["BTCUSDT"]
    np.testing.assert_array_equal(stored["close"].to_numpy(), expected["close"].to_numpy())
    np.testing.assert_array_equal(stored["count"].to_numpy(), expected["count"].to_numpy())

    source, _ = open_source(load_config(config))

    async def trades() -> list[Trade]:
        return [t async for batch in source.trades({}) for t in batch]

    counts = np.bincount([(t.event_time - T0) // 10_000 for t in asyncio.run(trades())], minlength=360)
    np.testing.assert_array_equal(counts, expected["count"].to_numpy())
