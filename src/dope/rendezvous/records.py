"""The decoy's archive of what was decided: scores, predictions, decisions and fills, in Parquet.

Beside the feature archive (:mod:`dope.rendezvous.archive`), every ``Score`` (each model's answer,
abstentions included), ``Prediction`` (the rendezvous' choice with its provenance and the roles in
force), ``Decision`` and ``Fill`` (the trader's) is kept exactly as published. Layout::

    <store>/live/<kind>/<symbol>/date=<UTC day of time>/part-<n>.parquet

with ``kind`` one of ``score``, ``prediction``, ``decision``, ``fill``. Columns: ``time`` (the bar's
open time; a fill's event time), ``key`` (a score's model id, a fill's client order id, else ``""``)
and ``message`` (the message's msgpack bytes, :func:`dope.messages.encode`), so ``read`` gives back
messages equal, bit for bit, to the ones published (NaN predictions included). Each write appends its
batch as the day's next part, atomically, as the feature archive does; one row per ``(time, key)`` is
read back, the last written (writing twice changes nothing). A day written by an earlier DOPE as one
``<kind>.parquet`` is read as its first part.

>>> import tempfile
>>> from dope.messages import Score
>>> archive = MessageArchive(tempfile.mkdtemp())
>>> score = Score(symbol="BTCUSDT", event_time=9_999, open_time=0, model_id="rf", model_kind="random_forest",
...               feature_version="1", prediction=0.001, latency_us=80)
>>> archive.write([score, score])
1
>>> archive.read("score", "BTCUSDT") == [score]
True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from dope.messages import (
    AnyMessage,
    Decision,
    Features,
    Fill,
    Prediction,
    SchemaVersionError,
    Score,
    decode,
    encode,
)
from dope.rendezvous.archive import FeatureArchive, day_parts, utc_day, write_part
from dope.store.bars import CorruptFileError, check_symbol

ArchivedMessage = Score | Prediction | Decision | Fill
ARCHIVED: Final = (Features, Score, Prediction, Decision, Fill)
"""The message kinds the decoy archives (features in :class:`FeatureArchive`, the others here)."""
KINDS: Final = {Score: "score", Prediction: "prediction", Decision: "decision", Fill: "fill"}
SCHEMA: Final = pa.schema([("time", pa.int64()), ("key", pa.string()), ("message", pa.binary())])


def row_key(msg: ArchivedMessage) -> tuple[int, str]:
    """A message's ``(time, key)``: one row per key in the archive."""
    if isinstance(msg, Score):
        return msg.open_time, msg.model_id
    if isinstance(msg, Fill):
        return msg.event_time, msg.client_order_id
    return msg.open_time, ""


class MessageArchive:
    """Scores, predictions, decisions and fills of any symbols under ``<root>/live``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "live"

    def day_folder(self, kind: str, symbol: str, time_ms: int) -> Path:
        """The folder of ``kind`` messages of ``symbol`` whose time falls on the UTC day of ``time_ms``."""
        return self.folder(kind, symbol) / f"date={utc_day(time_ms)}"

    def day_files(self, kind: str, symbol: str, time_ms: int) -> list[Path]:
        """The files of that day, in the order they were written."""
        return day_parts(self.day_folder(kind, symbol, time_ms), f"{kind}.parquet")

    def folder(self, kind: str, symbol: str) -> Path:
        """The folder of one kind and symbol (``kind``: ``score``, ``prediction``, ``decision``, ``fill``)."""
        if kind not in KINDS.values():
            raise ValueError(f"unknown archived kind {kind!r}: expected one of {', '.join(KINDS.values())}")
        return self.root / kind / check_symbol(symbol)

    def write(self, messages: Iterable[ArchivedMessage]) -> int:
        """Append ``messages`` (the last of a key in the batch wins) as a part of each day and kind they
        fall on; return how many rows were written."""
        groups: dict[Path, dict[tuple[int, str], bytes]] = {}
        for msg in messages:
            key = row_key(msg)
            groups.setdefault(self.day_folder(KINDS[type(msg)], msg.symbol, key[0]), {})[key] = encode(msg)
        for day, rows in groups.items():
            write_part(day, pa.Table.from_pylist([{"time": t, "key": k, "message": rows[(t, k)]}
                                                  for t, k in sorted(rows)], schema=SCHEMA))
        return sum(len(rows) for rows in groups.values())

    def read(self, kind: str, symbol: str, start_ms: int | None = None,
             end_ms: int | None = None) -> list[Any]:
        """The archived ``kind`` messages of ``symbol`` with ``start_ms <= time < end_ms``, by time then key."""
        lo, hi = start_ms if start_ms is not None else -(2**63), end_ms if end_ms is not None else 2**63 - 1
        first = utc_day(lo) if start_ms is not None else ""  # only the days that can hold the range
        last = utc_day(hi - 1) if end_ms is not None else "~"
        out: list[Any] = []
        for day in sorted(self.folder(kind, symbol).glob("date=*")):
            if not first <= day.name.removeprefix("date=") <= last:
                continue
            rows = {(r["time"], r["key"]): (path, r) for path in day_parts(day, f"{kind}.parquet")
                    for r in _read_rows(path) if lo <= r["time"] < hi}
            out.extend(_decode(*rows[k]) for k in sorted(rows))
        return out

    def referenced_models(self) -> set[str]:
        """Every model id an archived prediction names (chosen, answered, missed or holding a role), of any
        symbol: the models ``dope lineage`` needs to reproduce archived decisions, so never to be deleted."""
        found: set[str] = set()
        for symbol_folder in sorted((self.root / "prediction").glob("*")):
            for pred in self.read("prediction", symbol_folder.name):
                found.update([pred.model_id, *pred.answered, *pred.missed, *pred.roles])
        found.discard("")
        return found


class LiveArchive:
    """Both archives behind one ``write``: feature vectors to :class:`FeatureArchive`, the rest to
    :class:`MessageArchive` (what the decoy writes)."""

    def __init__(self, root: str | Path) -> None:
        self.features = FeatureArchive(root)
        self.messages = MessageArchive(root)

    def write(self, messages: Iterable[AnyMessage]) -> int:
        """Archive ``messages`` of the :data:`ARCHIVED` kinds (others are ignored); rows changed."""
        batch = list(messages)
        vectors = [m for m in batch if isinstance(m, Features)]
        others = [m for m in batch if isinstance(m, Score | Prediction | Decision | Fill)]
        return (self.features.write(vectors) if vectors else 0) + (self.messages.write(others) if others else 0)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = pq.read_table(path, schema=SCHEMA).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(f"corrupt archive file {path}: {exc}") from None
    return rows


def _decode(path: Path, row: dict[str, Any]) -> AnyMessage:
    try:
        return decode(row["message"])
    except (msgspec.DecodeError, SchemaVersionError) as exc:
        raise CorruptFileError(f"corrupt archive file {path}: row (time {row['time']}, key {row['key']!r}) "
                               f"holds no readable message: {exc}") from None
