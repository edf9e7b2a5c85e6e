"""The recorded trades a fake Binance replays: raw trades and the aggregate trades built from them.

Sources are the bundled spot trade CSVs (``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``)
or the raw combined-stream websocket logs (``<receive ns> <json>``). Prices and quantities stay the
decimal strings Binance sent, so the fake's wire output is the real one.
"""

from __future__ import annotations

import bisect
import gzip
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from dope.bars import TradeArrays


@dataclass(frozen=True, slots=True)
class RawTrade:
    """One exchange trade as recorded."""

    id: int
    price: str
    qty: str
    time: int
    is_buyer_maker: bool


@dataclass(frozen=True, slots=True)
class AggTrade:
    """One aggregate trade: consecutive raw trades of the same time, price and side."""

    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time: int
    is_buyer_maker: bool


@dataclass
class SymbolData:
    """Raw and aggregate trades of one symbol, oldest first, with their times for bisection."""

    symbol: str
    raw: list[RawTrade]
    agg: list[AggTrade] = field(default_factory=list)
    raw_times: list[int] = field(default_factory=list)
    agg_times: list[int] = field(default_factory=list)
    agg_ids: list[int] = field(default_factory=list)
    arrays: TradeArrays | None = None

    def __post_init__(self) -> None:
        self.raw.sort(key=lambda t: t.id)
        self.raw_times = [t.time for t in self.raw]
        if not self.agg:
            self.agg = aggregate(self.raw)
        self.agg_times = [a.time for a in self.agg]
        self.agg_ids = [a.agg_id for a in self.agg]
        self.arrays = _arrays(self.raw)

    def raw_happened(self, now_ms: int) -> int:
        """Number of raw trades with time <= ``now_ms``."""
        return bisect.bisect_right(self.raw_times, now_ms)

    def agg_happened(self, now_ms: int) -> int:
        """Number of aggregate trades with time <= ``now_ms``."""
        return bisect.bisect_right(self.agg_times, now_ms)

    def trade_arrays(self, count: int) -> TradeArrays:
        """The first ``count`` raw trades as arrays for ``dope.bars.build_bars``."""
        assert self.arrays is not None
        a = self.arrays
        return TradeArrays.raw(a.time[:count], a.trade_id[:count], a.price[:count], a.qty[:count],
                               a.is_buyer_maker[:count])


def _arrays(raw: list[RawTrade]) -> TradeArrays:
    return TradeArrays.raw(
        np.array([t.time for t in raw], dtype=np.int64), np.array([t.id for t in raw], dtype=np.int64),
        np.array([float(t.price) for t in raw], dtype=np.float64),
        np.array([float(t.qty) for t in raw], dtype=np.float64),
        np.array([t.is_buyer_maker for t in raw], dtype=np.bool_),
    )


AGG_ID_START = 1_000_000
"""Aggregate ids of the fake start here (real ones are just larger numbers)."""


def aggregate(raw: list[RawTrade], start_id: int = AGG_ID_START) -> list[AggTrade]:
    """Group consecutive raw trades of equal time, price and side into aggregate trades."""
    out: list[AggTrade] = []
    group: list[RawTrade] = []
    for trade in raw:
        if group and not _same_group(group[0], trade):
            out.append(_agg(start_id + len(out), group))
            group = []
        group.append(trade)
    if group:
        out.append(_agg(start_id + len(out), group))
    return out


def _same_group(a: RawTrade, b: RawTrade) -> bool:
    return a.time == b.time and a.price == b.price and a.is_buyer_maker == b.is_buyer_maker


def _agg(agg_id: int, group: list[RawTrade]) -> AggTrade:
    qty = sum((Decimal(t.qty) for t in group), Decimal(0))
    first = group[0]
    return AggTrade(agg_id, first.price, f"{qty:.8f}", first.id, group[-1].id, first.time, first.is_buyer_maker)


def bundled_trade_files() -> list[Path]:
    """The spot trade CSVs shipped in ``dope/data`` (not the klines beside them)."""
    from dope.market.replay import bundled_trade_files as shipped

    return shipped()


def load_files(paths: list[Path]) -> dict[str, SymbolData]:
    """Read trade CSVs and/or websocket logs into per-symbol data."""
    raw: dict[str, list[RawTrade]] = {}
    for path in paths:
        reader = _read_ws_log if path.name.endswith(".log.gz") else _read_csv
        for symbol, trade in reader(path):
            raw.setdefault(symbol, []).append(trade)
    return {symbol: SymbolData(symbol, _dedup(trades)) for symbol, trades in raw.items()}


def _dedup(trades: list[RawTrade]) -> list[RawTrade]:
    return list({t.id: t for t in trades}.values())


def _read_csv(path: Path) -> list[tuple[str, RawTrade]]:
    symbol = path.name.split("-", 1)[0].upper()
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip().split(",")
        col = {name: i for i, name in enumerate(header)}
        rows = [line.rstrip("\n").split(",") for line in handle if line.strip()]
    return [
        (symbol, RawTrade(int(r[col["id"]]), r[col["price"]], r[col["qty"]], int(r[col["time"]]),
                          r[col["is_buyer_maker"]] == "True"))
        for r in rows
    ]


def _read_ws_log(path: Path) -> list[tuple[str, RawTrade]]:
    out: list[tuple[str, RawTrade]] = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            _, _, body = line.partition(" ")
            data = json.loads(body).get("data", {})
            if data.get("e") == "trade":
                out.append((data["s"], RawTrade(data["t"], data["p"], data["q"], data["T"], data["m"])))
    return out
