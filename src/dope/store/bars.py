"""DOPE's bar store: a Parquet dataset partitioned by interval, symbol and UTC day, queried with DuckDB.

Layout (see ``docs/store.md``)::

    <root>/bars/interval=10s/symbol=BTCUSDT/date=2024-08-09/bars.parquet

Each day file holds ``BAR_COLUMNS`` (the symbol, interval and day are in the
path), sorted by ``open_time``, unique on it. Writes are upserts keyed by
``(symbol, open_time)`` (new rows win) and atomic: a day file is written to a
temporary file, fsynced and renamed over the old one, so a reader or a crash
never sees half a file.

>>> import tempfile, pandas as pd
>>> from dope.bars import build_bars, TradeArrays
>>> store = BarStore(tempfile.mkdtemp())
>>> trades = TradeArrays.raw(*[np.array(a) for a in ([1_000, 12_000], [1, 2], [10.0, 11.0], [1.0, 2.0])],
...                          np.array([False, True]))
>>> store.write_bars(build_bars(trades, "BTCUSDT", 10_000), 10_000)
2
>>> store.read_bars("BTCUSDT", 10_000)["close"].tolist()
[10.0, 11.0]
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dope.bars.interval import check_interval_ms, format_interval, parse_interval
from dope.bars.schema import BAR_COLUMNS, BAR_DTYPES, empty_bar_frame
from dope.errors import UserError
from dope.fileio import atomic_write, exclusive_lock
from dope.types import DAY_MS

FILE_NAME: Final = "bars.parquet"
COMPRESSION: Final = "snappy"
_MIN_TIME: Final = -(2**63)
_MAX_TIME: Final = 2**63 - 1
_SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEMA: Final = pa.schema([(name, pa.from_numpy_dtype(np.dtype(dtype))) for name, dtype in BAR_DTYPES.items()])
_PRICES: Final = ("open", "high", "low", "close")
Columns = dict[str, npt.NDArray[np.generic]]


class StoreError(UserError, ValueError):
    """The store was asked something it cannot do (bad frame, bad symbol, nothing stored)."""


class CorruptFileError(StoreError):
    """A Parquet file of the store cannot be read; the message names it."""


class BarStore:
    """Bars of any symbols and intervals in a Parquet dataset under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._con: duckdb.DuckDBPyConnection | None = None

    # ---- paths -------------------------------------------------------------------------------
    def interval_dir(self, interval_ms: int) -> Path:
        """Folder of one interval: ``<root>/bars/interval=<10s>``."""
        return self.root / "bars" / f"interval={format_interval(check_interval_ms(interval_ms))}"

    def symbol_dir(self, symbol: str, interval_ms: int) -> Path:
        """Folder of one symbol at one interval."""
        return self.interval_dir(interval_ms) / f"symbol={check_symbol(symbol)}"

    def day_file(self, symbol: str, interval_ms: int, day: dt.date) -> Path:
        """The file holding the bars of ``symbol`` that open on UTC ``day``."""
        return self.symbol_dir(symbol, interval_ms) / f"date={day.isoformat()}" / FILE_NAME

    def day_files(self, symbol: str, interval_ms: int, start_ms: int | None = None,
                  end_ms: int | None = None) -> list[Path]:
        """Existing day files of ``symbol`` whose day overlaps ``[start_ms, end_ms)``, oldest first."""
        first = _day_name(start_ms) if start_ms is not None else ""
        last = _day_name(end_ms - 1) if end_ms is not None else "~"
        files = sorted(self.symbol_dir(symbol, interval_ms).glob(f"date=*/{FILE_NAME}"))
        return [f for f in files if first <= f.parent.name[5:] <= last]

    # ---- writing -----------------------------------------------------------------------------
    def write_bars(self, frame: pd.DataFrame, interval_ms: int) -> int:
        """Upsert bars (``symbol`` + ``BAR_COLUMNS``) keyed by ``(symbol, open_time)``; return ``len(frame)``.

        Rows already stored with the same key are replaced (the new row wins; in
        ``frame`` itself the last duplicate wins). A day file whose content would
        not change is left untouched, so writing the same bars twice is a no-op.
        """
        frame = validate_bar_frame(frame, interval_ms)
        if frame.empty:
            return 0
        with self._write_lock():
            for symbol, part in frame.groupby("symbol", sort=True):
                columns = _sort_columns({name: part[name].to_numpy() for name in BAR_COLUMNS})
                for day, lo, hi in _day_slices(np.asarray(columns["open_time"], dtype=np.int64)):
                    path = self.day_file(str(symbol), interval_ms, day)
                    self._upsert(path, {name: values[lo:hi] for name, values in columns.items()})
        return len(frame)

    def _upsert(self, path: Path, new: Columns) -> None:
        new = _keep_last(new)
        if path.exists():
            old = read_columns(path)
            merged = _keep_last(_sort_columns({n: np.concatenate([old[n], new[n]]) for n in BAR_COLUMNS}))
            if _same_columns(merged, old):
                return
            new = merged
        _atomic_write(new, path)

    def _write_lock(self) -> AbstractContextManager[None]:
        """One writer at a time per store (an advisory lock on ``<root>/.write.lock``)."""
        return exclusive_lock(self.root / ".write.lock")

    # ---- reading -----------------------------------------------------------------------------
    def read_bars(self, symbol: str, interval_ms: int, start_ms: int | None = None,
                  end_ms: int | None = None) -> pd.DataFrame:
        """Bars of ``symbol`` with ``start_ms <= open_time < end_ms`` (None: unbounded), by ``open_time``."""
        files = self.day_files(symbol, interval_ms, start_ms, end_ms)
        if not files:
            return empty_bar_frame(symbol)
        sql = (f"SELECT {_column_list()} FROM read_parquet($files) "
               "WHERE open_time >= $start AND open_time < $end ORDER BY open_time")
        params = {"files": [str(f) for f in files], "start": _MIN_TIME if start_ms is None else start_ms,
                  "end": _MAX_TIME if end_ms is None else end_ms}
        frame = self._execute(sql, params, files)
        frame.insert(0, "symbol", symbol)
        return frame.astype(BAR_DTYPES)

    def last_bar(self, symbol: str, interval_ms: int) -> pd.Series | None:
        """The newest stored bar of ``symbol`` (with its ``symbol``), or None when there is none."""
        for path in reversed(self.day_files(symbol, interval_ms)):
            day = read_day_file(path)
            if len(day):
                row: pd.Series = pd.concat([pd.Series({"symbol": symbol}, dtype=object),
                                            day.iloc[-1].astype(object)])
                return row
        return None

    def symbols(self, interval_ms: int) -> list[str]:
        """Symbols with at least one stored bar at ``interval_ms``, sorted."""
        folder = self.interval_dir(interval_ms)
        found = {p.parent.parent.name[7:] for p in folder.glob(f"symbol=*/date=*/{FILE_NAME}")}
        return sorted(found)

    def require_symbol(self, symbol: str, interval_ms: int) -> None:
        """Raise ``StoreError`` naming the symbols stored when ``symbol`` has no bar at ``interval_ms``."""
        stored = self.symbols(interval_ms)
        if symbol not in stored:
            raise StoreError(f"no {symbol} bars at interval {interval_ms} ms in {self.root} "
                             f"(symbols stored: {', '.join(stored) or 'none'})")

    def intervals(self) -> list[int]:
        """Stored intervals in milliseconds, shortest first."""
        found = {parse_interval(p.name[9:]) for p in (self.root / "bars").glob("interval=*") if p.is_dir()}
        return sorted(found)

    def query(self, sql: str) -> pd.DataFrame:
        """Run DuckDB ``sql`` against a view ``bars`` of every stored bar.

        The view has ``symbol``, ``interval_ms`` and ``BAR_COLUMNS``; filters on
        ``symbol`` prune the files read (hive partitioning).

        >>> BarStore("/nonexistent").query("SELECT count(*) AS n FROM bars")["n"].tolist()
        [0]
        """
        con = duckdb.connect()
        try:
            con.execute(f"CREATE VIEW bars AS {self._view_sql()}")
            return con.execute(sql).df()
        except duckdb.Error as exc:
            self._raise_if_corrupt(sorted((self.root / "bars").glob(f"*/*/*/{FILE_NAME}")))
            raise StoreError(f"query failed: {exc}") from None
        finally:
            con.close()

    def _view_sql(self) -> str:
        parts = [
            f"SELECT symbol, {ms}::BIGINT AS interval_ms, {_column_list()} FROM read_parquet("
            f"{_sql_string(str(self.interval_dir(ms)) + '/*/*/' + FILE_NAME)}, hive_partitioning = true, "
            "hive_types_autocast = false)"
            for ms in self.intervals() if any(self.interval_dir(ms).glob(f"*/*/{FILE_NAME}"))
        ]
        return " UNION ALL ".join(parts) if parts else _empty_view_sql()

    def _execute(self, sql: str, params: dict[str, object], files: list[Path]) -> pd.DataFrame:
        if self._con is None:
            self._con = duckdb.connect()
        try:
            frame: pd.DataFrame = self._con.cursor().sql(sql, params=params).to_arrow_table().to_pandas()
            return frame
        except duckdb.Error as exc:
            self._raise_if_corrupt(files)
            raise StoreError(f"reading {len(files)} files under {files[0].parent.parent} failed: {exc}") from None

    @staticmethod
    def _raise_if_corrupt(files: list[Path]) -> None:
        for path in files:
            read_day_file(path)


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is safe as a folder name (letters, digits, ``_.-``), else raise."""
    if not _SYMBOL_RE.match(symbol):
        raise StoreError(f"bad symbol {symbol!r}: expected letters, digits, '_', '.' or '-'")
    return symbol


def validate_bar_frame(frame: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """``frame`` with bar dtypes, or a ``StoreError`` naming the first problem found."""
    check_interval_ms(interval_ms)
    missing = [c for c in ["symbol", *BAR_COLUMNS] if c not in frame.columns]
    if missing:
        raise StoreError(f"bar frame lacks column(s) {', '.join(missing)}")
    try:
        frame = frame[["symbol", *BAR_COLUMNS]].astype(BAR_DTYPES)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"bar frame has a column of the wrong type: {exc}") from None
    _check_rows(frame, interval_ms)
    return frame


def _check_rows(frame: pd.DataFrame, interval_ms: int) -> None:
    open_time = frame["open_time"].to_numpy()
    prices = frame[list(_PRICES)].to_numpy()
    checks = [
        (~(np.isfinite(prices) & (prices > 0)).all(axis=1), "a price that is NaN, infinite or not positive"),
        (open_time % interval_ms != 0, f"an open_time not a multiple of the interval {interval_ms} ms"),
        (frame["close_time"].to_numpy() != open_time + interval_ms - 1, "close_time != open_time + interval - 1"),
        ((frame[["volume", "quote_volume", "count"]].to_numpy() < 0).any(axis=1), "a negative volume or count"),
    ]
    for bad, problem in checks:
        if bad.any():
            row = frame[bad].iloc[0]
            raise StoreError(f"{int(bad.sum())} bar(s) with {problem}, first: {row['symbol']} "
                             f"open_time={row['open_time']}")
    for symbol in frame["symbol"].unique():
        check_symbol(str(symbol))


def read_columns(path: Path) -> Columns:
    """One day file as numpy columns; ``CorruptFileError`` naming the file if it cannot be read."""
    try:
        table = pq.ParquetFile(path).read(use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(f"corrupt parquet file {path}: {exc} (delete it and re-import that day)") from None
    missing = [c for c in BAR_COLUMNS if c not in table.column_names]
    if missing:
        raise CorruptFileError(f"parquet file {path} lacks bar column(s) {', '.join(missing)}")
    return {name: table.column(name).to_numpy().astype(BAR_DTYPES[name], copy=False) for name in BAR_COLUMNS}


def read_day_file(path: Path) -> pd.DataFrame:
    """One day file as a bar frame without ``symbol`` (see ``read_columns``)."""
    return pd.DataFrame(read_columns(path), columns=BAR_COLUMNS)


def _atomic_write(columns: Columns, path: Path) -> None:
    """Write ``columns`` to ``path`` atomically (see :mod:`dope.fileio`)."""
    table = pa.table(columns, schema=_SCHEMA)
    atomic_write(path, lambda handle: pq.write_table(table, handle, compression=COMPRESSION,
                                                     use_dictionary=False))


def _sort_columns(columns: Columns) -> Columns:
    """Columns ordered by ``open_time`` (stable: equal keys keep their order)."""
    order = np.argsort(columns["open_time"], kind="stable")
    return {name: values[order] for name, values in columns.items()}


def _keep_last(columns: Columns) -> Columns:
    """Sorted columns with only the last row of each ``open_time``."""
    open_time = columns["open_time"]
    keep = np.append(open_time[1:] != open_time[:-1], True) if len(open_time) else np.ones(0, dtype=bool)
    return columns if keep.all() else {name: values[keep] for name, values in columns.items()}


def _same_columns(a: Columns, b: Columns) -> bool:
    return all(np.array_equal(a[name], b[name]) for name in BAR_COLUMNS)


def _day_slices(open_time: npt.NDArray[np.int64]) -> Iterator[tuple[dt.date, int, int]]:
    """``(UTC day, start, stop)`` of each run of sorted ``open_time`` within one day."""
    days = open_time // DAY_MS
    cuts = np.flatnonzero(np.diff(days)) + 1
    starts, stops = np.r_[0, cuts], np.r_[cuts, len(days)]
    for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):
        yield _day_of(int(days[lo]) * DAY_MS), lo, hi


def _day_of(time_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC).date()


def _day_name(time_ms: int) -> str:
    return _day_of(max(time_ms, 0)).isoformat()


def _column_list() -> str:
    return ", ".join(f'"{name}"' for name in BAR_COLUMNS)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_SQL_TYPES: Final = {"int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN"}


def _empty_view_sql() -> str:
    columns = ", ".join(f'NULL::{_SQL_TYPES[dtype]} AS "{name}"' for name, dtype in BAR_DTYPES.items())
    return f"SELECT NULL::VARCHAR AS symbol, NULL::BIGINT AS interval_ms, {columns} LIMIT 0"
