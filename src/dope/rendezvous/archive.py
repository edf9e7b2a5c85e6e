"""The decoy's archive: every feature vector exactly as the models received it, in Parquet.

Layout::

    <store>/features/<feature_set>/<symbol>/date=<UTC day of open_time>/part-<n>.parquet

Each write appends its batch as the day's next part (atomic; earlier parts are never rewritten), so a
flush costs time and memory for its batch, whatever the day holds. One row per ``(open_time,
feature_version)`` is read back: a re-published vector replaces the stored one (the last write wins),
so writing twice is harmless. Every field of the :class:`~dope.messages.Features` message is kept:
``read`` gives back messages equal, field for field and bit for bit, to the ones published. A day
written by an earlier DOPE as one ``features.parquet`` is read as the day's first part.

>>> import tempfile
>>> from dope.messages import Features
>>> archive = FeatureArchive(tempfile.mkdtemp())
>>> vec = Features(symbol="BTCUSDT", event_time=9_999, open_time=0, feature_set="default",
...                feature_version="1", values=[0.1, -2.5], seq=1, source="featurizer")
>>> archive.write([vec, vec])
1
>>> archive.read("default", "BTCUSDT") == [vec]
True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from dope.fileio import atomic_write
from dope.messages import Features
from dope.store.bars import CorruptFileError, check_symbol

LEGACY_FILE: Final = "features.parquet"
"""A day written by DOPE 0.1 (one file, rewritten at every flush)."""
PART_PREFIX: Final = "part-"
SCHEMA: Final = pa.schema([
    ("open_time", pa.int64()), ("event_time", pa.int64()), ("feature_version", pa.string()),
    ("values", pa.list_(pa.float64())), ("seq", pa.int64()), ("source", pa.string()), ("v", pa.int64()),
])


class FeatureArchive:
    """Feature vectors of any feature sets and symbols under ``<root>/features``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "features"

    def day_folder(self, feature_set: str, symbol: str, open_time: int) -> Path:
        """The folder of the vectors of ``symbol`` whose bar opens on the UTC day of ``open_time``."""
        return self.root / check_symbol(feature_set) / check_symbol(symbol) / f"date={utc_day(open_time)}"

    def write(self, vectors: Iterable[Features]) -> int:
        """Append ``vectors`` (the last of a key in the batch wins) as a part of each day they fall on;
        return how many rows were written."""
        groups: dict[Path, dict[tuple[int, str], dict[str, Any]]] = {}
        for vec in vectors:
            day = self.day_folder(vec.feature_set, vec.symbol, vec.open_time)
            groups.setdefault(day, {})[(vec.open_time, vec.feature_version)] = _row(vec)
        for day, rows in groups.items():
            write_part(day, pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=SCHEMA))
        return sum(len(rows) for rows in groups.values())

    def read(self, feature_set: str, symbol: str, start_ms: int | None = None,
             end_ms: int | None = None) -> list[Features]:
        """The archived vectors with ``start_ms <= open_time < end_ms``, by open time then version."""
        folder = self.root / check_symbol(feature_set) / check_symbol(symbol)
        lo, hi = start_ms if start_ms is not None else -(2**63), end_ms if end_ms is not None else 2**63 - 1
        out: list[Features] = []
        for day in sorted(folder.glob("date=*")):
            rows = {(r["open_time"], r["feature_version"]): r
                    for path in day_parts(day, LEGACY_FILE) for r in _read_rows(path) if lo <= r["open_time"] < hi}
            out.extend(Features(symbol=symbol, feature_set=feature_set, **rows[k]) for k in sorted(rows))
        return out


def day_parts(day: Path, legacy: str) -> list[Path]:
    """The files of one day folder in the order they were written: ``legacy`` (one file for the whole day,
    as DOPE 0.1 wrote it) first, then the parts."""
    old = day / legacy
    return ([old] if old.exists() else []) + [path for _, path in sorted(_numbered_parts(day))]


def write_part(day: Path, table: pa.Table) -> Path:
    """Write ``table`` as the next part of ``day`` (created if needed), atomically; return its path."""
    day.mkdir(parents=True, exist_ok=True)
    last = max((n for n, _ in _numbered_parts(day)), default=0)
    path = day / f"{PART_PREFIX}{last + 1:06d}.parquet"
    atomic_write(path, lambda handle: pq.write_table(table, handle, compression="snappy", use_dictionary=False))
    return path


def _numbered_parts(day: Path) -> list[tuple[int, Path]]:
    """The parts of ``day`` with their numbers (ordered by number, not by name, past part 999999 too)."""
    return [(int(n), p) for p in day.glob(f"{PART_PREFIX}*.parquet") if (n := p.stem.removeprefix(PART_PREFIX)).isdigit()]


def utc_day(time_ms: int) -> str:
    """The UTC day of an epoch-ms time, ``YYYY-MM-DD`` (the archives' ``date=`` folders)."""
    return dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC).date().isoformat()


def _row(vec: Features) -> dict[str, Any]:
    return {"open_time": vec.open_time, "event_time": vec.event_time, "feature_version": vec.feature_version,
            "values": list(vec.values), "seq": vec.seq, "source": vec.source, "v": vec.v}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = pq.read_table(path, schema=SCHEMA, use_threads=False).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(f"corrupt feature archive file {path}: {exc}") from None
    return rows
