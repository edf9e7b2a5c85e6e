"""``dope trader state | reset-kill-switch | compact`` run as the user runs them, on a real trader's journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dope.config import config_from_dict
from dope.services.trader import reset_flag_path, take_trader_lock
from dope.trading.journal import Journal, ResetRecord, StepRecord, read_journal
from dope.trading.live import SymbolTrader
from dope.trading.risk import RiskState
from tests.trader_helpers import make_prediction, walk

TRADER = {"upper": 0.001, "lower": -0.001, "allow_short": True, "slippage_bps": 2.0, "symbols": ["BTCUSDT"],
          "journal_fsync": False}


def dope(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dope.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture()
def traded(tmp_path: Path) -> tuple[Path, SymbolTrader]:
    """A config file and the trader that wrote ``<state>/trader.journal`` over 150 bars."""
    state = tmp_path / "state"
    config_file = tmp_path / "dope.toml"
    lines = [f'state_dir = "{state}"'] + [f"{k} = {json.dumps(v)}" for k, v in TRADER.items()]
    config_file.write_text("[trader]\n" + "\n".join(lines) + "\n")
    config = config_from_dict({"trader": {**TRADER, "state_dir": str(state)}}).trader
    bars, preds = walk(150, seed=21)
    with Journal(state / "trader.journal", fsync=False) as journal:
        trader = SymbolTrader("BTCUSDT", config, None, journal=journal)
        for bar, pred in zip(bars, preds, strict=True):
            trader.on_bar(bar, bar.close_time)
            trader.on_prediction(make_prediction(bar.open_time, pred), bar.close_time)
    return config_file, trader


def state_of(config_file: Path) -> dict:  # type: ignore[type-arg]
    done = dope("trader", "state", "--config", config_file, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_state_tells_what_the_trader_holds(traded: tuple[Path, SymbolTrader]) -> None:
    config_file, trader = traded
    (btc,) = state_of(config_file)["symbols"]
    pf = trader.portfolio
    assert (btc["position"], btc["cash"], btc["round_trips"]) == (pf.qty, pf.cash, len(pf.trades))
    assert btc["equity"] == trader.core.equity() and len(pf.trades) > 5
    assert btc["last_bar_open_time"] == trader.last_open_time and btc["kill_switch"] is False
    table = dope("trader", "state", "--config", config_file)
    assert table.returncode == 0 and "BTCUSDT" in table.stdout and "off" in table.stdout


def test_kill_switch_shows_and_resets_by_hand(traded: tuple[Path, SymbolTrader], tmp_path: Path) -> None:
    config_file, trader = traded
    path = tmp_path / "state" / "trader.journal"
    last = read_journal(path)[-1]
    with Journal(path, fsync=False) as journal:
        journal.append(StepRecord(symbol="BTCUSDT", open_time=trader.last_open_time + 10_000, close=100.0,
                                  risk=RiskState(killed=True, reason="daily loss 2.1% > 2%")))
    (btc,) = state_of(config_file)["symbols"]
    assert btc["kill_switch"] is True and btc["kill_reason"] == "daily loss 2.1% > 2%"
    assert isinstance(last, StepRecord)

    done = dope("trader", "reset-kill-switch", "--config", config_file)
    assert done.returncode == 0, done.stderr
    config = config_from_dict({"trader": {**TRADER, "state_dir": str(tmp_path / "state")}}).trader
    assert reset_flag_path(config, "trader").exists()
    with Journal(path, fsync=False) as journal:  # what the running trader does when it sees the flag
        journal.append(ResetRecord(symbol="BTCUSDT", time_ms=1))
    assert state_of(config_file)["symbols"][0]["kill_switch"] is False


def test_compact_refuses_while_the_trader_runs_and_keeps_its_state(traded: tuple[Path, SymbolTrader],
                                                                   tmp_path: Path) -> None:
    config_file, _ = traded
    config = config_from_dict({"trader": {**TRADER, "state_dir": str(tmp_path / "state")}}).trader
    before = state_of(config_file)
    lock = take_trader_lock(config, "trader")  # as a running trader holds it
    try:
        refused = dope("trader", "compact", "--config", config_file)
    finally:
        lock.close()
    assert refused.returncode == 2 and "already running" in refused.stderr
    done = dope("trader", "compact", "--config", config_file)
    assert done.returncode == 0, done.stderr
    after = state_of(config_file)
    assert f"{before['records']} records -> {after['records']}" in done.stdout
    assert sum(isinstance(r, StepRecord) for r in read_journal(tmp_path / "state" / "trader.journal")) == 1
    assert after["records"] < before["records"] and after["symbols"] == before["symbols"]


def test_state_of_a_trader_that_never_ran_is_a_clear_error(tmp_path: Path) -> None:
    done = dope("trader", "state", "--name", "nobody")
    assert done.returncode == 2 and "no journal" in done.stderr and "nobody" in done.stderr


def test_state_flags_orders_that_executed_partly(tmp_path: Path) -> None:
    from dope.trading.journal import FillRecord
    from dope.trading.orders import Execution

    (tmp_path / "dope.toml").write_text(f'[trader]\nstate_dir = "{tmp_path}"\n')
    fill = Execution(symbol="BTCUSDT", time_ms=1, side=1, qty=0.004, price=60_000.0, value=240.0, fee=0.24)
    with Journal(tmp_path / "trader.journal", fsync=False) as journal:
        journal.append(FillRecord(symbol="BTCUSDT", client_order_id="dope-BTCUSDT-1-open", fill=fill,
                                  unfilled="0.012"))
    (btc,) = state_of(tmp_path / "dope.toml")["symbols"]
    assert btc["partial_orders"] == {"dope-BTCUSDT-1-open": "0.012"} and btc["position"] == 0.004
    table = dope("trader", "state", "--config", tmp_path / "dope.toml")
    assert "dope-BTCUSDT-1-open executed partly; 0.012 was not executed" in table.stdout
