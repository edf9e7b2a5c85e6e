"""The synthetic market: determinism, the two outputs agreeing, stylized facts, calibration and the command."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from dope.bars import TradeArrays, build_bars, resample_bars
from dope.bars.schema import BAR_COLUMNS, BAR_DTYPES
from dope.clock import SimulatedClock
from dope.config import SyntheticRegime
from dope.errors import UserError
from dope.market.synthetic import SyntheticSource, generate_bars
from dope.market.synthetic_params import ParamsError, load_params
from dope.messages import Trade
from tests.conftest import require_shared_data

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000
DAY = 86_400_000
SWITCH = (SyntheticRegime(start=T0 + HOUR - 30_000, autocorr=0.3),
          SyntheticRegime(start="2024-01-01T01:20:00Z", autocorr=-0.4, vol_scale=2.0, rate_scale=0.5, drift=0.2))
"""Two regime changes inside the two hours the trade source tests run (one of them off the hour)."""


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[lag:] * x[:-lag]).mean() / x.var())


def _kurtosis(r: np.ndarray) -> float:
    r = r - r.mean()
    return float((r**4).mean() / r.var() ** 2 - 3.0)


@pytest.fixture(scope="module")
def month() -> dict[str, pd.DataFrame]:
    return generate_bars(["BTCUSDT", "ETHUSDT"], T0, T0 + 30 * DAY, seed=11)


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a = generate_bars(["BTCUSDT"], T0, T0 + HOUR, seed=5)["BTCUSDT"]
    b = generate_bars(["BTCUSDT"], T0, T0 + HOUR, seed=5)["BTCUSDT"]
    c = generate_bars(["BTCUSDT"], T0, T0 + HOUR, seed=6)["BTCUSDT"]
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["close"].to_numpy(), c["close"].to_numpy())


def test_frame_layout_and_grid() -> None:
    frame = generate_bars(["ETHUSDT"], T0 + 1234, T0 + HOUR, seed=1)["ETHUSDT"]
    assert list(frame.columns) == ["symbol", *BAR_COLUMNS]
    assert {c: str(t) for c, t in frame.dtypes.items() if c != "symbol"} == BAR_DTYPES
    assert frame["open_time"].iloc[0] == T0 and len(frame) == 360
    assert np.all(np.diff(frame["open_time"].to_numpy()) == 10_000)
    tick = load_params().for_symbol("ETHUSDT").tick_size
    assert np.allclose(np.round(frame["close"] / tick) * tick, frame["close"], rtol=0, atol=1e-9)


def test_coarser_bars_aggregate_the_same_path() -> None:
    fine = generate_bars(["BTCUSDT"], T0, T0 + HOUR, seed=3)["BTCUSDT"]
    coarse = generate_bars(["BTCUSDT"], T0, T0 + HOUR, 60_000, seed=3)["BTCUSDT"]
    pd.testing.assert_frame_equal(coarse, resample_bars(fine, 10_000, 60_000))


def test_unfitted_symbol_gets_derived_defaults_and_bad_requests_fail() -> None:
    frame = generate_bars(["FOOUSDT"], T0, T0 + HOUR, seed=1)["FOOUSDT"]
    assert 50 < frame["close"].iloc[-1] < 200 and frame["count"].sum() > 0
    with pytest.raises(UserError, match="after start"):
        generate_bars(["BTCUSDT"], T0, T0, seed=1)
    with pytest.raises(UserError, match="duplicate"):
        generate_bars(["BTCUSDT", "BTCUSDT"], T0, T0 + HOUR)


def test_bad_params_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"symbols": {"BTCUSDT": {"tick_size": -1}}}')
    with pytest.raises(ParamsError, match="bad synthetic parameter file"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.json")


async def _collect(resume: dict[str, int], duration_ms: int = 2 * HOUR,
                   regimes: tuple[SyntheticRegime, ...] = ()) -> list[Trade]:
    source = SyntheticSource(["BTCUSDT", "ETHUSDT"], seed=3, start_ms=T0, duration_ms=duration_ms,
                             clock=SimulatedClock(T0), rate_scale=0.05, regimes=regimes)
    out: list[Trade] = []
    async for batch in source.trades(resume):
        out.extend(batch)
    assert source.counters["trades"] == len(out)
    return out


def test_trade_source_is_seeded_ordered_and_bounded() -> None:
    trades = asyncio.run(_collect({}))
    assert trades == asyncio.run(_collect({}))
    assert all(T0 <= t.event_time < T0 + 2 * HOUR for t in trades)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [t.trade_id for t in trades if t.symbol == symbol]
        assert ids == list(range(1, len(ids) + 1))
    times = [t.event_time for t in trades]
    assert times == sorted(times)


@pytest.mark.parametrize("regimes", [(), SWITCH], ids=["calibrated", "regimes"])
def test_resume_replays_exactly_the_uninterrupted_trades(regimes: tuple[SyntheticRegime, ...]) -> None:
    full = asyncio.run(_collect({}, regimes=regimes))
    resume = {"BTCUSDT": T0 + HOUR + 123_457, "ETHUSDT": T0 + 5_001}
    part = asyncio.run(_collect(resume, regimes=regimes))
    expected = [t for t in full if t.event_time >= resume[t.symbol]]
    assert part == expected and len(part) > 1000


def test_the_source_holds_a_window_of_trade_messages_not_an_hour() -> None:
    """An hour of trades (about 75,000 at rate scale 0.2) stays in arrays; only the 10 s window being
    yielded becomes messages. Building the hour's messages at once peaked at 28 MB of Python objects
    over three hours, and the collector's resident memory kept the high-water mark of its busiest hour."""
    source = SyntheticSource(["BTCUSDT", "ETHUSDT"], seed=11, start_ms=T0, duration_ms=3 * HOUR, rate_scale=0.2)

    async def stream() -> tuple[int, int]:
        trades = source.trades({})
        first = await anext(trades)  # the model's first day simulated, numba warm
        count, tracemalloc_peak = len(first), 0
        tracemalloc.start()
        try:
            async for batch in trades:
                assert len({t.event_time // 10_000 for t in batch}) == 1
                count += len(batch)
            tracemalloc_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return count, tracemalloc_peak

    count, peak = asyncio.run(stream())
    assert count > 200_000 and peak < 16_000_000, f"{peak / 1e6:.1f} MB for {count} trades"


def test_a_paced_source_resumed_later_starts_at_once() -> None:
    """A restarted collector resumes an hour in: its first batch comes after seconds of (scaled) wall time,
    not after the hour it had already run (speed 10: 360 s)."""
    wall = SimulatedClock(0)
    source = SyntheticSource(["BTCUSDT", "ETHUSDT"], seed=3, start_ms=T0, duration_ms=2 * HOUR, speed=10.0,
                             wall=wall, rate_scale=0.05)
    resume = {"BTCUSDT": T0 + HOUR, "ETHUSDT": T0 + HOUR}

    async def first_batch() -> list[Trade]:
        async for batch in source.trades(resume):
            return batch
        raise AssertionError("no batch")

    batch = asyncio.run(first_batch())
    assert batch[0].event_time >= T0 + HOUR
    assert wall.now_ms() <= 2_000


@pytest.mark.parametrize("regimes", [(), SWITCH], ids=["calibrated", "regimes"])
def test_bars_from_trades_match_generated_bars(regimes: tuple[SyntheticRegime, ...]) -> None:
    trades = [t for t in asyncio.run(_collect({}, regimes=regimes)) if t.symbol == "BTCUSDT"]
    arrays = TradeArrays.raw(*(np.array([getattr(t, n) for t in trades])
                               for n in ("event_time", "trade_id", "price", "qty", "is_buyer_maker")))
    generated = generate_bars(["BTCUSDT"], T0, T0 + 2 * HOUR, seed=3, rate_scale=0.05,
                              regimes=regimes)["BTCUSDT"]
    built = build_bars(arrays, "BTCUSDT", 10_000, start_open_time=T0,
                       prev_close=float(generated["open"].iloc[0]))
    generated = generated.iloc[: len(built)]
    for column in ("open_time", "count", "close", "empty", "first_trade_id", "last_trade_id"):
        np.testing.assert_array_equal(generated[column].to_numpy(), built[column].to_numpy())
    assert 0.5 < built["volume"].sum() / generated["volume"].sum() < 2.0
    assert (built["high"] - built["low"]).mean() <= (generated["high"] - generated["low"]).mean() * 1.05


def test_fat_tails_at_10s_and_after_aggregation(month: dict[str, pd.DataFrame]) -> None:
    bars = month["BTCUSDT"]
    assert _kurtosis(np.diff(np.log(bars["close"].to_numpy()))) > 1.0
    quarter = resample_bars(bars, 10_000, 900_000)
    assert _kurtosis(np.diff(np.log(quarter["close"].to_numpy()))) > 1.0


def test_volatility_clusters_while_returns_do_not_correlate(month: dict[str, pd.DataFrame]) -> None:
    r = np.diff(np.log(month["BTCUSDT"]["close"].to_numpy()))
    assert all(_acf(np.abs(r), lag) > 0.1 for lag in (1, 10, 60, 360, 1000))
    assert all(abs(_acf(r, lag)) < 0.03 for lag in (1, 2, 5, 10, 60))


def test_trade_counts_are_bursty(month: dict[str, pd.DataFrame]) -> None:
    counts = month["ETHUSDT"]["count"].to_numpy()
    assert counts.var() / counts.mean() > 1.5
    assert _acf(counts.astype(float), 1) > 0.1


def test_taker_buy_share_near_fitted_and_persistent(month: dict[str, pd.DataFrame]) -> None:
    fitted = load_params().for_symbol("BTCUSDT").taker_buy_share
    five = resample_bars(month["BTCUSDT"], 10_000, 300_000)
    share = (five["taker_buy_volume"] / five["volume"]).to_numpy()
    assert abs(five["taker_buy_volume"].sum() / five["volume"].sum() - fitted) < 0.03
    assert _acf(share, 1) > 0.05


def test_follower_moves_with_its_leader(month: dict[str, pd.DataFrame]) -> None:
    btc, eth = (np.diff(np.log(month[s]["close"].to_numpy())) for s in ("BTCUSDT", "ETHUSDT"))
    assert np.corrcoef(btc, eth)[0, 1] > 0.3


@pytest.mark.shared_data
def test_volatility_within_a_factor_of_the_real_data(month: dict[str, pd.DataFrame]) -> None:
    path = require_shared_data("binance", "klines", "15m")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        real = pd.read_csv(next(path.glob(f"{symbol}-15m-*.csv.gz")))
        real_std = np.diff(np.log(real["close"].to_numpy())).std()
        quarter = resample_bars(month[symbol], 10_000, 900_000)
        ratio = np.diff(np.log(quarter["close"].to_numpy())).std() / real_std
        assert 0.5 < ratio < 2.0, (symbol, ratio)
        real_rate = real["count"].mean()
        assert 0.5 < quarter["count"].mean() / real_rate < 2.0


@pytest.mark.shared_data
def test_calibrate_command_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dope.cli import main

    data = require_shared_data("binance")
    out = tmp_path / "params.json"
    assert main(["synth", "--calibrate", "--data", str(data), "--params-out", str(out)]) == 0
    fitted, committed = load_params(out), load_params()
    assert set(fitted.symbols) == set(committed.symbols)
    assert_same_params(msgspec.to_builtins(fitted), msgspec.to_builtins(committed))


KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                "taker_buy_quote_volume,ignore")


def _kline_line(k: int, close: str = "100.02", volume: str = "3.5") -> str:
    start = T0 + k * 900_000
    return f"{start},100.00,100.05,99.95,{close},{volume},{start + 899_999},350.1,12,1.5,150.0,0"


def _write_gz(path: Path, lines: list[str]) -> None:
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")


@pytest.mark.parametrize(("klines", "trade", "problem"), [
    ({"close": "-100.02"}, "0.5", r"BTCUSDT-15m-2024-01\.csv\.gz, line 3: not a positive number close"),
    ({"close": "NaN"}, "0.5", r"line 3: missing or NaN close"),
    ({"volume": "NaN"}, "0.5", r"line 3: missing or NaN volume"),
    ({}, "-0.5", r"BTCUSDT-trades-spot-2024-01-01\.csv\.gz, line 2: negative or infinite qty"),
], ids=["negative-price", "nan-price", "nan-volume", "negative-trade-size"])
def test_calibration_refuses_a_bad_row_naming_file_line_and_column(tmp_path: Path, klines: dict[str, str],
                                                                     trade: str, problem: str) -> None:
    """The calibration reads through the validated readers (it used to accept these rows silently)."""
    from dope.market.calibration import calibrate
    from dope.store.files import BadRowError

    rows = [_kline_line(k, **(klines if k == 1 else {})) for k in range(4)]
    _write_gz(tmp_path / "klines" / "15m" / "BTCUSDT-15m-2024-01.csv.gz", [KLINE_HEADER, *rows])
    _write_gz(tmp_path / "trades" / "spot" / "BTCUSDT-trades-spot-2024-01-01.csv.gz",
              ["id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
               f"1,100.01,{trade},50.0,{T0 + 1_000},True,True", f"2,100.02,0.25,25.0,{T0 + 2_000},False,True"])
    with pytest.raises(BadRowError, match=problem):
        calibrate(tmp_path)


def assert_same_params(got: object, expected: object, where: str = "params") -> None:
    """Equal structure and text; floats to 1e-9 (numpy's vectorised sums differ in the last digits by CPU)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same_params(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_params(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert got == expected, where


def test_synth_command_writes_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dope.cli import main
    from dope.store import BarStore

    args = ["synth", "BTCUSDT", "SOLUSDT", "--start", "2024-01-01", "--duration", "2h", "--seed", "4",
            "--interval", "1m", "--store", str(tmp_path)]
    assert main(args) == 0
    assert "wrote 240 bars" in capsys.readouterr().out
    assert len(BarStore(tmp_path).day_files("BTCUSDT", 60_000)) == 1
    assert main(["synth", "BTCUSDT", "--duration", "soon", "--store", str(tmp_path)]) == 2
    assert main(["synth", "--store", str(tmp_path)]) == 2
