"""The trader's journal: records round-trip, a crash leaves a partial last record that is ignored
(with a warning), damage elsewhere is an error, and a trader restarted from it at any bar ends
exactly where an uninterrupted one does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dope.config import TraderConfig
from dope.messages import AnyMessage
from dope.trading.journal import (
    FillRecord,
    IntentRecord,
    Journal,
    JournalError,
    ResetRecord,
    StepRecord,
    compact,
    compact_journal,
    encode_record,
    fold,
    read_journal,
)
from dope.trading.live import SymbolTrader
from dope.trading.orders import Execution, Order
from tests.trader_helpers import make_prediction, walk

CONFIG = TraderConfig(upper=0.001, lower=-0.001, allow_short=True, slippage_bps=2.0)


def records() -> list:  # type: ignore[type-arg]
    fill = Execution(symbol="BTCUSDT", time_ms=5, side=1, qty=0.1, price=100.0, value=10.0, fee=0.01)
    return [IntentRecord(symbol="BTCUSDT", client_order_id="a", side="BUY", qty="0.1", open_time=1),
            FillRecord(symbol="BTCUSDT", client_order_id="a", fill=fill),
            StepRecord(symbol="BTCUSDT", open_time=1, close=101.0,
                       pending=Order(symbol="BTCUSDT", time_ms=9, target=-1, prediction=-0.5)),
            ResetRecord(symbol="ETHUSDT", time_ms=3)]


def test_records_round_trip_and_fold(tmp_path: Path) -> None:
    path = tmp_path / "t.journal"
    with Journal(path) as journal:
        journal.append(*records())
    assert read_journal(path) == records()
    history = fold(records())
    btc = history["BTCUSDT"]
    assert btc.open_intents == {} and btc.finished_orders == {"a"} and len(btc.fills) == 1
    assert btc.last_step is not None and btc.last_step.pending is not None and history["ETHUSDT"].resets == 1


@pytest.mark.parametrize("cut", [1, 9, 20, -2])
def test_a_truncated_last_record_is_ignored_with_a_warning_and_cut_off(tmp_path: Path, cut: int,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.journal"
    whole = b"".join(encode_record(r) for r in records())
    last = encode_record(records()[-1])
    path.write_bytes(whole[:len(whole) - len(last) + (cut if cut > 0 else len(last) + cut)])
    with caplog.at_level(logging.WARNING, logger="dope.trader.journal"):
        assert read_journal(path) == records()[:-1]
    assert "crash while writing" in caplog.text
    assert path.read_bytes() == whole[:len(whole) - len(last)]  # repaired: the next append starts clean
    with Journal(path) as journal:
        journal.append(records()[-1])
    assert read_journal(path) == records()


def test_damage_before_the_last_record_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.journal"
    lines = [bytearray(encode_record(r)) for r in records()]
    lines[1][20] ^= 0x01  # one flipped bit in the second record
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalError, match="record 2 is damaged"):
        read_journal(path)


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "none.journal") == []


def drive(trader: SymbolTrader, bars: list, preds: list, start: int, stop: int) -> list[AnyMessage]:  # type: ignore[type-arg]
    out: list[AnyMessage] = []
    for bar, pred in zip(bars[start:stop], preds[start:stop], strict=True):
        out += trader.on_bar(bar, bar.close_time)
        out += trader.on_prediction(make_prediction(bar.open_time, pred), bar.close_time)
    return out


@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("crash_at", [1, 17, 33, 58])
def test_a_restarted_trader_ends_where_an_uninterrupted_one_does(tmp_path: Path, crash_at: int,
                                                                 compacted: bool) -> None:
    bars, preds = walk(80, seed=11)
    whole = SymbolTrader("BTCUSDT", CONFIG, None)
    expected = drive(whole, bars, preds, 0, len(bars))

    path = tmp_path / "t.journal"
    with Journal(path) as journal:
        first = SymbolTrader("BTCUSDT", CONFIG, None, journal=journal)
        got = drive(first, bars, preds, 0, crash_at)
        first.on_bar(bars[crash_at], bars[crash_at].close_time)  # handled, then killed before its decision
    if compacted:
        before, after = compact_journal(path)
        assert after < before or crash_at == 1
    with Journal(path) as journal:
        second = SymbolTrader("BTCUSDT", CONFIG, fold(read_journal(path)).get("BTCUSDT"), journal=journal)
        assert second.on_bar(bars[crash_at - 1], 0) == []  # already handled: skipped
        got += drive(second, bars, preds, crash_at, len(bars))
    assert got == expected
    assert second.portfolio.trades == whole.portfolio.trades and second.portfolio.cash == whole.portfolio.cash
    assert len(whole.portfolio.trades) > 3


def test_order_records_are_fsynced_at_once_and_bar_steps_in_groups(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dope.trading.journal as journal_module

    synced: list[int] = []
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: synced.append(fd))
    intent, _, step, _ = records()
    with Journal(tmp_path / "t.journal", step_sync_ms=60_000) as journal:
        for _ in range(100):
            journal.append(step)
        assert synced == []                       # steps wait for the group commit
        journal.append(intent)
        assert len(synced) == 1                   # an order intent is on disk before the order is sent
    assert len(synced) == 1                       # nothing left to sync at close
    assert len(read_journal(tmp_path / "t.journal")) == 101


def test_compaction_keeps_what_a_restart_folds_and_only_that(tmp_path: Path) -> None:
    bars, preds = walk(200, seed=4)
    path = tmp_path / "t.journal"
    with Journal(path) as journal:
        trader = SymbolTrader("BTCUSDT", CONFIG, None, journal=journal)
        drive(trader, bars, preds, 0, len(bars))
        journal.append(ResetRecord(symbol="BTCUSDT", time_ms=1))  # after the last step: it must survive
    records = read_journal(path)
    kept = compact(records)
    assert fold(kept) == fold(records) and fold(kept)["BTCUSDT"].resets == 1
    assert sum(isinstance(r, StepRecord) for r in kept) == 1
    assert len(kept) == len(records) - sum(isinstance(r, StepRecord) for r in records) + 1 + sum(
        len(r.fills) for r in records[:-2] if isinstance(r, StepRecord))
    assert compact(kept) == kept  # compacting twice changes nothing
    assert compact_journal(path) == (len(records), len(kept))
    assert read_journal(path) == kept
