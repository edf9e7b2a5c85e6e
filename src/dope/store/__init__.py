"""DOPE's store: bars in a Parquet dataset queried with DuckDB, and import of Binance public data files.

>>> from dope.store import BarStore  # doctest: +SKIP
"""

from dope.store.bars import BarStore, CorruptFileError, StoreError
from dope.store.files import (
    BadRowError,
    FileFormatError,
    FileInfo,
    Klines,
    ReadStats,
    detect_file,
    iter_trades,
    read_klines,
    read_trades,
)
from dope.store.importer import ChunkedBars, IngestResult, ingest_files

__all__ = [
    "BadRowError",
    "BarStore",
    "ChunkedBars",
    "CorruptFileError",
    "FileFormatError",
    "FileInfo",
    "IngestResult",
    "Klines",
    "ReadStats",
    "StoreError",
    "detect_file",
    "ingest_files",
    "iter_trades",
    "read_klines",
    "read_trades",
]
