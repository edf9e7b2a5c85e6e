"""The decoy's archive: every feature vector exactly as the models received it, in Parquet.

Layout::

    <store>/features/<feature_set>/<symbol>/date=<UTC day of open_time>/features.parquet

One row per ``(open_time, feature_version)`` (a re-published vector replaces the stored one, so
writing twice is harmless), sorted, with every field of the :class:`~dope.messages.Features`
message: ``read`` gives back messages equal, field for field and bit for bit, to the ones published.

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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from dope.fileio import atomic_write
from dope.messages import Features
from dope.store.bars import CorruptFileError, check_symbol

FILE_NAME: Final = "features.parquet"
SCHEMA: Final = pa.schema([
    ("open_time", pa.int64()), ("event_time", pa.int64()), ("feature_version", pa.string()),
    ("values", pa.list_(pa.float64())), ("seq", pa.int64()), ("source", pa.string()), ("v", pa.int64()),
])


class FeatureArchive:
    """Feature vectors of any feature sets and symbols under ``<root>/features``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "features"

    def day_file(self, feature_set: str, symbol: str, open_time: int) -> Path:
        """The file holding the vectors of ``symbol`` whose bar opens on the UTC day of ``open_time``."""
        return self.root / check_symbol(feature_set) / check_symbol(symbol) / f"date={utc_day(open_time)}" / FILE_NAME

    def write(self, vectors: Iterable[Features]) -> int:
        """Upsert ``vectors`` (by feature set, symbol, open time and version); return how many rows changed hands."""
        groups: dict[Path, list[Features]] = {}
        for vec in vectors:
            groups.setdefault(self.day_file(vec.feature_set, vec.symbol, vec.open_time), []).append(vec)
        return sum(self._upsert(path, batch) for path, batch in groups.items())

    def _upsert(self, path: Path, batch: list[Features]) -> int:
        """Merge ``batch`` into the day file at ``path`` in Arrow columns: only the batch and the stored rows
        it replaces become Python objects, so a flush costs memory in proportion to the batch, not the day."""
        new = {(vec.open_time, vec.feature_version): _row(vec) for vec in batch}
        table = _read_table(path) if path.exists() else SCHEMA.empty_table()
        replaced = _key_mask(table, new)
        if len(new) == int(replaced.sum()) and all(
                _same(new[(row["open_time"], row["feature_version"])], row)
                for row in table.filter(pa.array(replaced)).to_pylist()):
            return 0
        kept = table.filter(pa.array(~replaced))
        merged = pa.concat_tables([kept, pa.Table.from_pylist(list(new.values()), schema=SCHEMA)])
        _write_atomic(merged.sort_by([("open_time", "ascending"), ("feature_version", "ascending")]), path)
        return len(new)

    def read(self, feature_set: str, symbol: str, start_ms: int | None = None,
             end_ms: int | None = None) -> list[Features]:
        """The archived vectors with ``start_ms <= open_time < end_ms``, by open time then version."""
        folder = self.root / check_symbol(feature_set) / check_symbol(symbol)
        lo, hi = start_ms if start_ms is not None else -(2**63), end_ms if end_ms is not None else 2**63 - 1
        out: list[Features] = []
        for path in sorted(folder.glob(f"date=*/{FILE_NAME}")):
            out.extend(Features(symbol=symbol, feature_set=feature_set, **row)
                       for row in _read_rows(path) if lo <= row["open_time"] < hi)
        return out


def utc_day(time_ms: int) -> str:
    """The UTC day of an epoch-ms time, ``YYYY-MM-DD`` (the archives' ``date=`` folders)."""
    return dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC).date().isoformat()


def _row(vec: Features) -> dict[str, Any]:
    return {"open_time": vec.open_time, "event_time": vec.event_time, "feature_version": vec.feature_version,
            "values": list(vec.values), "seq": vec.seq, "source": vec.source, "v": vec.v}


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path, schema=SCHEMA, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(f"corrupt feature archive file {path}: {exc}") from None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = _read_table(path).to_pylist()
    return rows


def _key_mask(table: pa.Table, keys: Mapping[tuple[int, str], object]) -> npt.NDArray[np.bool_]:
    """Which rows of ``table`` have a ``(open_time, feature_version)`` among ``keys``."""
    open_times = table.column("open_time").to_numpy()
    mask = np.isin(open_times, np.fromiter((t for t, _ in keys), np.int64, len(keys)))
    for i in np.flatnonzero(mask).tolist():
        mask[i] = (int(open_times[i]), table.column("feature_version")[i].as_py()) in keys
    return mask


def _write_atomic(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda handle: pq.write_table(table, handle, compression="snappy", use_dictionary=False))


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Rows equal field for field, values compared bit for bit (so NaN equals NaN)."""
    if a is None or any(a[k] != b[k] for k in b if k != "values"):
        return False
    return np.asarray(a["values"], np.float64).tobytes() == np.asarray(b["values"], np.float64).tobytes()
