"""Readers of Binance public data files (data.binance.vision layouts): trades, aggTrades and klines.

Spot and USD-M futures columns, ``.csv``, ``.csv.gz`` or ``.zip`` (the CSV inside), with or without a
header row, millisecond or microsecond timestamps (told apart by magnitude and converted to ms). The
layout comes from the header or the column count and content, checked against the file name
(``BTCUSDT-aggTrades-2025-01-01.zip``, ``BTCUSDT-15m-2025-01.zip``).

A bad row (broken CSV row, missing or non-numeric field, NaN/negative/zero price, ...) raises
``BadRowError`` naming the file, the line and the problem; with ``bad_rows="skip"`` such rows are
dropped, counted in a ``ReadStats`` and logged instead.
"""

from __future__ import annotations

import gzip
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.bars.interval import check_interval_ms, parse_interval
from dope.bars.schema import BAR_DTYPES
from dope.bars.vectorized import TradeArrays
from dope.errors import UserError

log = logging.getLogger(__name__)

Layout = Literal["trades", "aggTrades", "klines"]
BadRows = Literal["raise", "skip"]
KLINE_COLUMNS: Final = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                        "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
COLUMNS: Final[dict[tuple[Layout, str], list[str]]] = {
    ("trades", "spot"): ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    ("trades", "futures"): ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"],
    ("aggTrades", "spot"): ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                            "transact_time", "is_buyer_maker", "is_best_match"],
    ("aggTrades", "futures"): ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                               "transact_time", "is_buyer_maker"],
    ("klines", "any"): KLINE_COLUMNS,
}
_NAME_RE: Final = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>trades|aggTrades|\d+(?:s|m|h|d|w|M))(?:-|\.|$)")
_US_THRESHOLD: Final = 10**14
_NS_THRESHOLD: Final = 10**17
DEFAULT_CHUNK_ROWS: Final = 500_000


class BadRowError(UserError, ValueError):
    """A row of a data file is broken; the message names the file, the line and the problem."""


class FileFormatError(UserError, ValueError):
    """A file is not a Binance data file DOPE can read (unknown layout, unreadable archive, ...)."""


@dataclass
class ReadStats:
    """What a read saw: rows accepted, rows skipped and the first few problems."""

    rows: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, message: str, count: int = 1) -> None:
        self.skipped += count
        if len(self.problems) < 10:
            self.problems.append(message)


@dataclass(frozen=True)
class FileInfo:
    """What a file holds, as detected from its name and first line."""

    path: Path
    layout: Layout
    market: str
    columns: list[str]
    header: bool
    symbol: str | None
    interval_ms: int | None
    """Kline interval named in the file name, if any."""


class Klines(NamedTuple):
    """Bars read from a klines file, and their interval."""

    frame: pd.DataFrame
    interval_ms: int


# ---- opening and detection ---------------------------------------------------------------------

@contextmanager
def open_data(path: Path) -> Iterator[IO[bytes]]:
    """The CSV bytes of ``path`` (plain, gzip, or the single CSV inside a zip)."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive, archive.open(_csv_member(archive, path)) as handle:
                yield handle
        elif path.suffix == ".gz":
            with gzip.open(path, "rb") as gz:
                yield cast(IO[bytes], gz)
        else:
            with open(path, "rb") as handle:
                yield handle
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError) as exc:
        raise FileFormatError(f"{path}: unreadable archive: {exc}") from None


def _csv_member(archive: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
    if len(names) != 1:
        raise FileFormatError(f"{path}: expected one .csv inside the zip, found {len(names)}")
    return names[0]


def parse_file_name(path: Path) -> tuple[str | None, str | None]:
    """``(symbol, kind)`` from a Binance file name: kind is ``trades``, ``aggTrades`` or an interval."""
    match = _NAME_RE.match(path.name)
    return (match["symbol"], match["kind"]) if match else (None, None)


def detect_file(path: str | Path) -> FileInfo:
    """Detect the layout of ``path`` from its first line, checked against its name."""
    path = Path(path)
    with open_data(path) as handle:
        first = handle.readline().decode("utf-8", errors="replace").strip()
    if not first:
        raise FileFormatError(f"{path}: empty file")
    fields = [f.strip() for f in first.split(",")]
    header = not _is_number(fields[0])
    layout, market = _layout_from_header(fields, path) if header else _layout_from_row(fields, path)
    symbol, kind = parse_file_name(path)
    interval_ms = _check_name_kind(path, layout, kind)
    return FileInfo(path, layout, market, COLUMNS[(layout, market)], header, symbol, interval_ms)


def _layout_from_header(fields: list[str], path: Path) -> tuple[Layout, str]:
    names = {f.lower() for f in fields}
    if "open_time" in names or "close_time" in names:
        return "klines", "any"
    if "first_trade_id" in names or "agg_trade_id" in names:
        return "aggTrades", "spot" if "is_best_match" in names else "futures"
    if "quote_qty" in names or "is_buyer_maker" in names:
        return "trades", "spot" if "is_best_match" in names else "futures"
    raise FileFormatError(f"{path}: unrecognised header {','.join(fields)!r}")


def _layout_from_row(fields: list[str], path: Path) -> tuple[Layout, str]:
    by_count: dict[int, tuple[Layout, str]] = {12: ("klines", "any"), 8: ("aggTrades", "spot"),
                                               6: ("trades", "futures")}
    if len(fields) in by_count:
        return by_count[len(fields)]
    if len(fields) == 7:  # spot trades end "...,time,bool,bool"; futures aggTrades "...,last_id,time,bool"
        return ("trades", "spot") if _is_bool(fields[5]) else ("aggTrades", "futures")
    raise FileFormatError(f"{path}: unrecognised layout: {len(fields)} columns in the first row")


def _check_name_kind(path: Path, layout: Layout, kind: str | None) -> int | None:
    if kind is None:
        return None
    named: Layout = kind if kind in ("trades", "aggTrades") else "klines"  # type: ignore[assignment]
    if named != layout:
        raise FileFormatError(f"{path}: the file name says {named} but the content has the {layout} layout")
    if layout != "klines":
        return None
    try:
        return parse_interval(kind)
    except ValueError as exc:
        raise FileFormatError(f"{path}: unsupported kline interval {kind!r}: {exc}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_bool(text: str) -> bool:
    return text.lower() in ("true", "false")


# ---- chunked, validated reading -----------------------------------------------------------------

class _Rows:
    """One chunk of a file under validation: converted columns and the rows found bad, with why."""

    def __init__(self, info: FileInfo, chunk: pd.DataFrame) -> None:
        self.info = info
        self.chunk = chunk
        self.bad = np.zeros(len(chunk), dtype=bool)
        self.reasons: list[tuple[npt.NDArray[np.bool_], str, str]] = []

    def flag(self, mask: npt.NDArray[np.bool_], problem: str, column: str) -> None:
        """Mark rows of ``mask`` bad because of ``problem`` in ``column``."""
        if mask.any():
            self.bad |= mask
            self.reasons.append((mask, problem, column))

    def floats(self, name: str) -> npt.NDArray[np.float64]:
        """Column ``name`` as floats; missing and non-numeric fields are flagged."""
        series = self.chunk[name]
        missing = series.isna().to_numpy()
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            self.flag(np.isnan(values) & ~missing, "non-numeric", name)
        self.flag(missing, "missing or NaN", name)
        return values

    def ints(self, name: str) -> npt.NDArray[np.int64]:
        """Column ``name`` as int64; missing, non-numeric and fractional fields are flagged."""
        series = self.chunk[name]
        if pd.api.types.is_integer_dtype(series):
            return series.to_numpy(dtype=np.int64)
        values = self.floats(name)
        finite = np.isfinite(values)
        self.flag(finite & (values != np.floor(values)), "not an integer", name)
        return np.where(finite, values, 0).astype(np.int64)

    def positive(self, name: str) -> npt.NDArray[np.float64]:
        """A price: must be a finite number above zero."""
        values = self.floats(name)
        self.flag(~np.isnan(values) & ~(np.isfinite(values) & (values > 0)), "not a positive number", name)
        return values

    def non_negative(self, name: str) -> npt.NDArray[np.float64]:
        """A quantity: must be a finite number, zero or more."""
        values = self.floats(name)
        self.flag(~np.isnan(values) & ~(np.isfinite(values) & (values >= 0)), "negative or infinite", name)
        return values

    def times(self, name: str) -> npt.NDArray[np.int64]:
        """Epoch timestamps in ms (µs and ns values converted); negative ones flagged."""
        values = self.ints(name)
        self.flag(values < 0, "negative time", name)
        return np.where(values >= _NS_THRESHOLD, values // 1_000_000,
                        np.where(values >= _US_THRESHOLD, values // 1_000, values))

    def bools(self, name: str) -> npt.NDArray[np.bool_]:
        """A True/False column (any case); anything else is flagged."""
        series = self.chunk[name]
        if pd.api.types.is_bool_dtype(series):
            return series.to_numpy(dtype=bool)
        text = series.astype("string").str.strip().str.lower()
        self.flag(~text.isin(["true", "false"]).to_numpy(dtype=bool), "not a boolean (True/False)", name)
        return (text == "true").to_numpy(dtype=bool, na_value=False)

    def first_problem(self) -> str:
        """``<file>, line <n>: <problem> <column> (<value>)`` for the earliest bad row."""
        row = int(np.argmax(self.bad))
        mask, problem, column = next(r for r in self.reasons if r[0][row])
        value = self.chunk[column].iloc[row]
        return f"{self.info.path}, line {self.line(row)}: {problem} {column} (value {str(value)!r})"

    def line(self, row: int) -> int:
        """File line number of chunk row ``row`` (exact unless earlier lines were skipped as broken)."""
        return int(self.chunk.index[row]) + 1 + int(self.info.header)

    def resolve(self, on_bad: BadRows, stats: ReadStats) -> npt.NDArray[np.bool_]:
        """Raise for bad rows, or count them in ``stats``; return the mask of good rows."""
        if self.bad.any():
            message = self.first_problem()
            if on_bad == "raise":
                raise BadRowError(message)
            log.warning("skipping %d bad row(s) of %s; first: %s", int(self.bad.sum()), self.info.path, message)
            stats.add_problem(message, int(self.bad.sum()))
        stats.rows += int((~self.bad).sum())
        return ~self.bad


def iter_chunks(info: FileInfo, chunk_rows: int = DEFAULT_CHUNK_ROWS, on_bad: BadRows = "raise",
                stats: ReadStats | None = None) -> Iterator[pd.DataFrame]:
    """Raw chunks of a file (columns named per its layout); broken CSV rows raise or are counted."""
    stats = stats if stats is not None else ReadStats()
    with open_data(info.path) as handle:
        reader = pd.read_csv(handle, header=0 if info.header else None, names=info.columns, chunksize=chunk_rows,
                             skip_blank_lines=False, on_bad_lines="error" if on_bad == "raise" else "warn")
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    chunk = next(reader)
                except StopIteration:
                    return
                except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
                    raise BadRowError(f"{info.path}: malformed CSV: {_clean(exc)}") from None
            _count_skipped_lines(info, caught, stats)
            yield chunk


def _count_skipped_lines(info: FileInfo, caught: list[warnings.WarningMessage], stats: ReadStats) -> None:
    for warning in caught:
        for line in str(warning.message).splitlines():
            if line.startswith("Skipping line"):
                log.warning("%s: %s", info.path, line)
                stats.add_problem(f"{info.path}: malformed CSV: {line}")


def _clean(exc: Exception) -> str:
    return str(exc).replace("Error tokenizing data. C error: ", "").strip()


# ---- trades -------------------------------------------------------------------------------------

def iter_trades(path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, on_bad: BadRows = "raise",
                stats: ReadStats | None = None, info: FileInfo | None = None) -> Iterator[TradeArrays]:
    """Trades of a trades or aggTrades file, ``chunk_rows`` rows at a time, in file order."""
    info = info or detect_file(path)
    if info.layout == "klines":
        raise FileFormatError(f"{info.path}: holds klines, not trades")
    stats = stats if stats is not None else ReadStats()
    for chunk in iter_chunks(info, chunk_rows, on_bad, stats):
        yield _trade_arrays(_Rows(info, chunk), on_bad, stats)


def read_trades(path: str | Path, *, on_bad: BadRows = "raise", stats: ReadStats | None = None) -> TradeArrays:
    """All trades of a trades or aggTrades file (see ``iter_trades``)."""
    return concat_trades(list(iter_trades(path, on_bad=on_bad, stats=stats)))


def _trade_arrays(rows: _Rows, on_bad: BadRows, stats: ReadStats) -> TradeArrays:
    agg = rows.info.layout == "aggTrades"
    trade_id = rows.ints("agg_trade_id" if agg else "id")
    price = rows.positive("price")
    qty = rows.non_negative("quantity" if agg else "qty")
    time = rows.times("transact_time" if agg else "time")
    maker = rows.bools("is_buyer_maker")
    first = rows.ints("first_trade_id") if agg else trade_id
    last = rows.ints("last_trade_id") if agg else trade_id
    if agg:
        rows.flag(last < first, "last_trade_id < first_trade_id in", "last_trade_id")
    good = rows.resolve(on_bad, stats)
    return TradeArrays(time[good], trade_id[good], price[good], qty[good], maker[good], first[good], last[good])


def concat_trades(parts: list[TradeArrays]) -> TradeArrays:
    """Trade arrays one after the other (empty arrays for an empty list)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return TradeArrays(empty_i, empty_i, empty_f, empty_f, np.empty(0, bool), empty_i, empty_i)
    names = ("time", "trade_id", "price", "qty", "is_buyer_maker", "first_trade_id", "last_trade_id")
    return TradeArrays(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


def take_trades(trades: TradeArrays, mask: npt.NDArray[np.bool_]) -> TradeArrays:
    """The trades where ``mask`` is true."""
    names = ("time", "trade_id", "price", "qty", "is_buyer_maker", "first_trade_id", "last_trade_id")
    return TradeArrays(*(getattr(trades, n)[mask] for n in names))


# ---- klines -------------------------------------------------------------------------------------

def read_klines(path: str | Path, *, symbol: str | None = None, on_bad: BadRows = "raise",
                stats: ReadStats | None = None) -> Klines:
    """Bars of a klines file at its own interval (from the name, else from open/close times).

    Rows become DOPE bars: ``empty`` when ``count == 0``, ``vwap`` = quote volume / volume (the
    close when there is no volume), trade ids ``-1`` (unknown) and ``close_time`` normalised to
    ``open_time + interval - 1``.
    """
    info = detect_file(path)
    if info.layout != "klines":
        raise FileFormatError(f"{info.path}: holds {info.layout}, not klines")
    symbol = symbol or info.symbol
    if symbol is None:
        raise FileFormatError(f"{info.path}: no symbol in the file name; give one")
    stats = stats if stats is not None else ReadStats()
    columns = [_kline_columns(_Rows(info, chunk)) for chunk in iter_chunks(info, on_bad=on_bad, stats=stats)]
    raw = pd.concat(columns) if columns else pd.DataFrame(columns=KLINE_COLUMNS[:-1])
    interval_ms = _kline_interval(info, raw)
    return Klines(_klines_to_bars(_check_klines(info, raw, interval_ms, on_bad, stats), symbol, interval_ms),
                  interval_ms)


def _kline_columns(rows: _Rows) -> pd.DataFrame:
    count = rows.ints("count")
    prices = {name: rows.positive(name) for name in ("open", "high", "low", "close")}
    sums = {name: rows.non_negative(name)
            for name in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")}
    high = prices["high"]
    rows.flag((high < prices["low"]) | (high < prices["open"]) | (high < prices["close"]),
              "high below another price in", "high")
    rows.flag(count < 0, "negative", "count")
    frame = pd.DataFrame({"open_time": rows.times("open_time"), "close_time": rows.times("close_time"),
                          "count": count, **prices, **sums}, index=rows.chunk.index)
    frame["line"] = [rows.line(i) for i in range(len(frame))]
    frame["problem"] = ""
    frame.loc[rows.bad, "problem"] = rows.first_problem() if rows.bad.any() else ""
    return frame


def _check_klines(info: FileInfo, raw: pd.DataFrame, interval_ms: int, on_bad: BadRows,
                  stats: ReadStats) -> pd.DataFrame:
    misaligned = (raw["open_time"] % interval_ms != 0) & (raw["problem"] == "")
    raw.loc[misaligned, "problem"] = [f"{info.path}, line {n}: open_time not a multiple of {interval_ms} ms"
                                      for n in raw.loc[misaligned, "line"]]
    bad = (raw["problem"] != "").to_numpy()
    if bad.any():
        message = str(raw["problem"].to_numpy()[np.argmax(bad)])
        if on_bad == "raise":
            raise BadRowError(message)
        stats.add_problem(message, int(bad.sum()))
    stats.rows += int((~bad).sum())
    return raw[~bad]


def _kline_interval(info: FileInfo, raw: pd.DataFrame) -> int:
    if info.interval_ms is not None:
        return info.interval_ms
    if raw.empty:
        raise FileFormatError(f"{info.path}: no rows and no interval in the file name")
    span = pd.Series(raw["close_time"] - raw["open_time"] + 1).mode().iloc[0]
    try:
        return check_interval_ms(int(span))
    except ValueError as exc:
        raise FileFormatError(f"{info.path}: cannot tell the kline interval: {exc}") from None


def _klines_to_bars(raw: pd.DataFrame, symbol: str, interval_ms: int) -> pd.DataFrame:
    volume, quote = raw["volume"].to_numpy(), raw["quote_volume"].to_numpy()
    safe = np.where(volume > 0, volume, 1.0)
    frame = pd.DataFrame({
        "open_time": raw["open_time"].to_numpy(), "close_time": raw["open_time"].to_numpy() + interval_ms - 1,
        **{name: raw[name].to_numpy() for name in ("open", "high", "low", "close", "volume", "quote_volume",
                                                    "count", "taker_buy_volume", "taker_buy_quote_volume")},
        "vwap": np.where(volume > 0, quote / safe, raw["close"].to_numpy()),
        "empty": raw["count"].to_numpy() == 0, "first_trade_id": -1, "last_trade_id": -1,
    })
    frame = frame[list(BAR_DTYPES)].astype(BAR_DTYPES)
    frame.insert(0, "symbol", symbol)
    return frame.sort_values("open_time", kind="stable").reset_index(drop=True)
