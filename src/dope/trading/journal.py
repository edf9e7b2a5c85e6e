"""The trader's journal: an append-only file of what it did, fsynced, read back on restart.

One record per line: ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. A record is written
(and, with ``fsync``, on disk) before the trader acts on it:

* ``intent`` - an order about to be sent to the exchange (written *before* sending it);
* ``fill`` - an executed order, booked in the portfolio;
* ``order`` - the end of an intent that produced no fill (rejected, or never reached the exchange);
* ``step`` - a bar fully handled: its paper fills, the order left waiting, the risk state;
* ``baseline`` - the exchange balances the trader started from (for reconciliation);
* ``reset`` - a manual reset of the kill switch.

A process killed at any moment leaves at most one partial last line: :func:`read_journal`
ignores it with a warning and cuts it off, so the next append starts on a clean line. A
damaged record that is *not* the last one means the file was tampered with or the disk
lost data: that is an error, not something to guess around.

A step per bar makes the file grow by some 2 MB a day per symbol at 10-second bars;
:func:`compact` keeps what a restart needs (every fill and order record, and each symbol's
last step), so :func:`fold` of the compacted records equals :func:`fold` of the whole
journal. The trader compacts its journal when it starts (:func:`compact_journal`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.journal"
>>> with Journal(path) as j:
...     j.append(ResetRecord(symbol="BTCUSDT", time_ms=5))
>>> read_journal(path)
[ResetRecord(time_ms=5, symbol='BTCUSDT')]
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import msgspec

from dope.errors import UserError
from dope.fileio import atomic_write
from dope.trading.orders import Execution, Order
from dope.trading.risk import RiskState

log = logging.getLogger("dope.trader.journal")


class JournalError(UserError, ValueError):
    """The journal is damaged somewhere other than its last record."""


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    symbol: str


class IntentRecord(_Record, frozen=True, tag="intent"):
    """An exchange order about to be sent (``qty`` as the exact decimal string sent) at ``time_ms``
    (the broker's clock; 0 in journals older than this field)."""

    client_order_id: str
    side: str
    qty: str
    open_time: int
    time_ms: int = 0


class FillRecord(_Record, frozen=True, tag="fill"):
    """An executed order as booked in the portfolio; ``dust`` is base left on the account by a close;
    ``unfilled`` the quantity a partly executed order (``EXPIRED``) left undone (decimal string)."""

    client_order_id: str
    fill: Execution
    dust: float = 0.0
    fee_asset: str = ""
    unfilled: str = ""


class OrderRecord(_Record, frozen=True, tag="order"):
    """The end of an intent without a fill: ``status`` is Binance's (``REJECTED``...) or ``MISSING``."""

    client_order_id: str
    status: str
    reason: str = ""


class StepRecord(_Record, frozen=True, tag="step"):
    """A bar handled: paper fills at its open, the order left waiting, risk state, buy-and-hold units."""

    open_time: int
    close: float
    fills: list[FillRecord] = []
    pending: Order | None = None
    risk: RiskState = msgspec.field(default_factory=RiskState)
    bh_qty: float = 0.0


class BaselineRecord(_Record, frozen=True, tag="baseline"):
    """The account's base-asset balance when the trader first started (free + locked)."""

    asset: str
    amount: float


class ResetRecord(_Record, frozen=True, tag="reset"):
    """The kill switch was reset by hand at ``time_ms``."""

    time_ms: int


Record = IntentRecord | FillRecord | OrderRecord | StepRecord | BaselineRecord | ResetRecord

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """One journal line (with its checksum and newline)."""
    body = _encoder.encode(record)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode_line(line: bytes) -> Record:
    """Parse one complete line; ValueError when it is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        raise ValueError("no checksum")
    body = line[9:]
    if int(line[:8], 16) != zlib.crc32(body):
        raise ValueError("checksum mismatch")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from None


def read_journal(path: Path, *, repair: bool = True) -> list[Record]:
    """Every record of ``path`` (none if it does not exist); a partial last record is dropped with a warning."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[Record] = []
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            records.append(_decode_line(line))
        except ValueError as exc:
            if number < len(lines) - 1:
                raise JournalError(f"{path}: record {number} is damaged ({exc}); refusing to guess") from None
            return _drop_tail(path, records, offset, f"record {number} is damaged ({exc})", repair)
        offset += len(line) + 1
    if lines[-1]:
        return _drop_tail(path, records, offset, "the last record was cut short", repair)
    return records


def _drop_tail(path: Path, records: list[Record], offset: int, why: str, repair: bool) -> list[Record]:
    log.warning("%s: %s (a crash while writing); ignoring it, %d records kept", path, why, len(records))
    if repair:
        with path.open("r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())
    return records


class Journal:
    """Appends records to ``path`` (created with its folder); every append is flushed before it returns.

    Flushed data survives the death of the process (SIGKILL included). With ``fsync`` it also
    survives the machine's: records about exchange orders (``intent``, ``fill``, ``order``,
    ``baseline``) are fsynced at once, bar ``step`` records at least every ``step_sync_ms``
    (group commit: an fsync per bar would cap a replay at a few hundred bars per second).
    """

    def __init__(self, path: Path, *, fsync: bool = True, step_sync_ms: int = 1_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fsync = fsync
        self.step_sync_s = step_sync_ms / 1000
        self._handle = path.open("ab")
        self._synced = time.monotonic()
        self._dirty = False

    def append(self, *records: Record) -> None:
        """Write ``records`` as one write, flush, and fsync as the policy says."""
        self._handle.write(b"".join(encode_record(r) for r in records))
        self._handle.flush()
        self._dirty = True
        if any(not isinstance(r, StepRecord | ResetRecord) for r in records) and self.fsync:
            self.sync()
        else:
            self.sync_if_due()

    def sync_if_due(self) -> None:
        """fsync when ``step_sync_ms`` passed since the last one (the trader also calls this when idle)."""
        if self.fsync and time.monotonic() - self._synced >= self.step_sync_s:
            self.sync()

    def sync(self) -> None:
        """fsync what was written."""
        if self._dirty:
            os.fsync(self._handle.fileno())
            self._synced, self._dirty = time.monotonic(), False

    def close(self) -> None:
        if not self._handle.closed:
            if self.fsync:
                self.sync()
            self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class SymbolHistory:
    """What the journal says about one symbol, folded in order."""

    fills: list[Execution] = field(default_factory=list)
    last_step: StepRecord | None = None
    open_intents: dict[str, IntentRecord] = field(default_factory=dict)
    finished_orders: set[str] = field(default_factory=set)
    baseline: BaselineRecord | None = None
    dust: float = 0.0
    resets: int = 0
    """Manual kill-switch resets after the last step (not yet in a step's risk state)."""
    partial_orders: dict[str, str] = field(default_factory=dict)
    """Client order id -> the quantity left unexecuted, of every order that executed partly."""


def fold(records: list[Record]) -> dict[str, SymbolHistory]:
    """Per symbol: the fills in order, the last step, intents still unresolved, known order ids."""
    out: dict[str, SymbolHistory] = {}
    for rec in records:
        _fold_one(out.setdefault(rec.symbol, SymbolHistory()), rec)
    return out


def _fold_one(h: SymbolHistory, rec: Record) -> None:
    if isinstance(rec, IntentRecord):
        h.open_intents[rec.client_order_id] = rec
    elif isinstance(rec, FillRecord):
        _fold_fill(h, rec)
    elif isinstance(rec, OrderRecord):
        h.open_intents.pop(rec.client_order_id, None)
        h.finished_orders.add(rec.client_order_id)
    elif isinstance(rec, StepRecord):
        for fill in rec.fills:
            _fold_fill(h, fill)
        h.last_step = rec
        h.resets = 0
    elif isinstance(rec, BaselineRecord):
        h.baseline = rec
    else:
        h.resets += 1


def _fold_fill(h: SymbolHistory, rec: FillRecord) -> None:
    h.fills.append(rec.fill)
    h.dust += rec.dust
    if rec.unfilled:
        h.partial_orders[rec.client_order_id] = rec.unfilled
    h.open_intents.pop(rec.client_order_id, None)
    h.finished_orders.add(rec.client_order_id)


def compact(records: list[Record]) -> list[Record]:
    """The records a restart needs, in order: each step but a symbol's last is replaced by its fills.

    ``fold(compact(records)) == fold(records)``: fold uses a step's fills and, of the steps,
    only the last (a manual reset before it is already in its risk state).
    """
    last_step = {rec.symbol: k for k, rec in enumerate(records) if isinstance(rec, StepRecord)}
    out: list[Record] = []
    for k, rec in enumerate(records):
        if isinstance(rec, StepRecord) and last_step[rec.symbol] != k:
            out.extend(rec.fills)
        else:
            out.append(rec)
    return out


def compact_journal(path: Path) -> tuple[int, int]:
    """Replace the journal at ``path`` by its :func:`compact` form, atomically: (records before, after).

    Only while no trader appends to it (the trader service does this before it opens its journal,
    holding its state lock).
    """
    before, kept = compacted_records(path)
    return before, len(kept)


def compacted_records(path: Path) -> tuple[int, list[Record]]:
    """:func:`compact_journal`, returning the number of records before and the records kept."""
    records = read_journal(path)
    kept = compact(records)
    if len(kept) < len(records):
        atomic_write(path, lambda handle: handle.write(b"".join(encode_record(r) for r in kept)))
    return len(records), kept
