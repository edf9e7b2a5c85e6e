"""``dope ingest`` and ``dope bars`` run as the user runs them (a subprocess), on the real bundled trades."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dope.bars import build_bars, resample_bars
from dope.cli import main
from dope.store import BarStore
from dope.store.files import read_trades
from dope.store.importer import ingest_files
from tests.conftest import bundled_trades_file

FILES = [bundled_trades_file("BTCUSDT"), bundled_trades_file("ETHUSDT")]
TEN_S = 10_000


def dope(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dope.cli ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "dope.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the bundled trades as 10 s bars, ingested once through the CLI."""
    root = tmp_path_factory.mktemp("store")
    done = dope("ingest", *FILES, "--store", root)
    assert done.returncode == 0, done.stderr
    assert "19904 trades rows -> 66 BTCUSDT bars (10s)" in done.stdout
    return root


def test_ingest_stores_what_build_bars_builds_and_is_idempotent(store_root: Path) -> None:
    store = BarStore(store_root)
    for path, symbol in zip(FILES, ["BTCUSDT", "ETHUSDT"], strict=True):
        pd.testing.assert_frame_equal(store.read_bars(symbol, TEN_S), build_bars(read_trades(path), symbol, TEN_S))
    before = snapshot(store_root)
    again = dope("ingest", *reversed(FILES), "--store", store_root)
    assert again.returncode == 0, again.stderr
    assert snapshot(store_root) == before


def test_chunked_ingest_equals_one_build(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    ingest_files(store, [FILES[0]], TEN_S, chunk_rows=777)  # windows straddle chunk boundaries
    pd.testing.assert_frame_equal(store.read_bars("BTCUSDT", TEN_S),
                                  build_bars(read_trades(FILES[0]), "BTCUSDT", TEN_S))


def test_bars_export_resampled_csv_and_parquet(store_root: Path, tmp_path: Path) -> None:
    start, end = "2024-08-08T23:56:00Z", "1723161720000"  # 23:56 .. 00:02 UTC
    done = dope("bars", "BTCUSDT", "--store", store_root, "--every", "1m", "--start", start, "--end", end)
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(io.StringIO(done.stdout))
    stored = BarStore(store_root).read_bars("BTCUSDT", TEN_S)
    expected = resample_bars(stored, TEN_S, 60_000)
    expected = expected[(expected["open_time"] >= 1723161360000) & (expected["open_time"] < 1723161720000)]
    assert got["open_time"].tolist() == expected["open_time"].tolist() == list(range(1723161360000,
                                                                                     1723161720000, 60_000))
    for name in ["open", "high", "low", "close", "volume", "count", "taker_buy_quote_volume"]:
        assert got[name].tolist() == expected[name].tolist(), name  # CSV keeps full float precision
    out = tmp_path / "btc.parquet"
    assert main(["bars", "BTCUSDT", "--store", str(store_root), "--format", "parquet", "--output", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), stored, check_dtype=False)


@pytest.mark.parametrize(("args", "message"), [
    (["bars", "SOLUSDT"], "no SOLUSDT bars at interval 10000 ms"),
    (["bars", "BTCUSDT", "--every", "15s"], "not a multiple"),
    (["bars", "BTCUSDT", "--every", "7x"], "--every: bad interval"),
    (["bars", "BTCUSDT", "--start", "yesterday-ish"], "bad time"),
    (["bars", "BTCUSDT", "--format", "parquet"], "needs --output"),
])
def test_bars_user_errors(store_root: Path, args: list[str], message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--store", str(store_root)]) == 2
    assert message in capsys.readouterr().err


def test_malformed_row_and_nan_price_are_clear_errors(tmp_path: Path) -> None:
    lines = gzip.decompress(FILES[0].read_bytes()).decode().splitlines()
    broken = tmp_path / "BTCUSDT-trades-broken.csv"
    broken.write_text("\n".join([*lines[:50], "3735683309,61837.6,0.1,oops", *lines[51:100]]) + "\n")
    nan_price = tmp_path / "BTCUSDT-trades-nan.csv.gz"
    nan_price.write_bytes(gzip.compress(("\n".join([*lines[:10], "3735683268,NaN,0.1,1.0,1723161256000,True,True"])
                                         + "\n").encode()))
    done = dope("ingest", broken, "--store", tmp_path / "store")
    assert done.returncode == 2
    assert f"{broken}, line 51: missing or NaN time" in done.stderr and "Traceback" not in done.stderr
    done = dope("ingest", nan_price, "--store", tmp_path / "store")
    assert done.returncode == 2 and f"{nan_price}, line 11: missing or NaN price" in done.stderr
    skipped = dope("ingest", broken, "--store", tmp_path / "store", "--skip-bad-rows")
    assert skipped.returncode == 0 and "1 bad rows skipped" in skipped.stdout


def test_corrupt_store_file_is_a_clear_cli_error(store_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    for name, data in snapshot(store_root).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    victim = next(copy.rglob("symbol=ETHUSDT/date=2024-08-09/bars.parquet"))
    victim.write_bytes(b"PAR1 this is not parquet")
    done = dope("bars", "ETHUSDT", "--store", copy)
    assert done.returncode == 2
    assert f"corrupt parquet file {victim}" in done.stderr and "Traceback" not in done.stderr
