"""REST endpoints of the fake Binance (``/api/v3/...``): pure functions of the replay state and the query.

Each handler takes the :class:`RestContext` and the query parameters and returns ``(status, body)``.
Only trades that already happened on the exchange clock are ever answered.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dope.bars import build_bars, parse_interval
from tests.fakes.binance_data import AggTrade, SymbolData

Body = Any
Answer = tuple[int, Body]
Params = Mapping[str, str]


class ApiError(Exception):
    """An error answer: HTTP status and Binance's ``{"code","msg"}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


@dataclass
class RestContext:
    """What the handlers read: the replayed symbols, the exchange info and the exchange time."""

    data: Mapping[str, SymbolData]
    exchange_info: dict[str, Any]
    now_ms: Callable[[], int]

    def known_symbols(self) -> set[str]:
        return {s["symbol"] for s in self.exchange_info["symbols"]}

    def symbol(self, params: Params) -> SymbolData | None:
        """The replayed symbol named by ``symbol`` (None: listed but not replayed); -1121 if unknown."""
        name = params.get("symbol", "")
        if not name:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if name not in self.data and name not in self.known_symbols():
            raise ApiError(400, -1121, "Invalid symbol.")
        return self.data.get(name)


INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
REAL_EXCHANGE_INFO = "binance/rest/exchangeInfo-2021-10-12.json.gz"


def int_param(params: Params, name: str, default: int | None = None) -> int | None:
    """An integer parameter, or ``default``; -1100 when it is not an integer."""
    text = params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None


def limit_param(params: Params, default: int = 500, maximum: int = 1000) -> int:
    limit = int_param(params, "limit", default)
    assert limit is not None
    if not 1 <= limit <= maximum:
        raise ApiError(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is '1-{maximum}'.")
    return limit


def ping(ctx: RestContext, params: Params) -> Answer:
    return 200, {}


def server_time(ctx: RestContext, params: Params) -> Answer:
    return 200, {"serverTime": ctx.now_ms()}


def exchange_info(ctx: RestContext, params: Params) -> Answer:
    """The (real or generated) exchange info, optionally filtered by ``symbol`` / ``symbols``."""
    wanted = _wanted_symbols(params)
    symbols = ctx.exchange_info["symbols"]
    if wanted is not None:
        by_name = {s["symbol"]: s for s in symbols}
        if any(name not in by_name for name in wanted):
            raise ApiError(400, -1121, "Invalid symbol.")
        symbols = [by_name[name] for name in wanted]
    return 200, {**ctx.exchange_info, "serverTime": ctx.now_ms(), "symbols": symbols}


def _wanted_symbols(params: Params) -> list[str] | None:
    if "symbol" in params and "symbols" in params:
        raise ApiError(400, -1101, "Too many parameters; expected 'symbol' and received 'symbols'.")
    if "symbol" in params:
        return [params["symbol"]]
    if "symbols" in params:
        try:
            names = json.loads(params["symbols"])
        except json.JSONDecodeError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        return [str(n) for n in names]
    return None


def agg_trades(ctx: RestContext, params: Params) -> Answer:
    """``/api/v3/aggTrades``: fromId, startTime, endTime, limit (<= 1000), happened trades only."""
    data = ctx.symbol(params)
    limit = limit_param(params)
    from_id = int_param(params, "fromId")
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    if from_id is not None and (start is not None or end is not None):
        raise ApiError(400, -1128, "Combination of optional parameters invalid.")
    if data is None:
        return 200, []
    happened = data.agg_happened(ctx.now_ms())
    lo, hi = _agg_window(data, happened, from_id, start, end)
    rows = data.agg[lo:min(hi, lo + limit)] if (from_id is not None or start is not None) else data.agg[max(lo, hi - limit):hi]
    return 200, [_agg_json(a) for a in rows]


def _agg_window(data: SymbolData, happened: int, from_id: int | None, start: int | None,
                end: int | None) -> tuple[int, int]:
    import bisect

    lo, hi = 0, happened
    if from_id is not None:
        lo = bisect.bisect_left(data.agg_ids, from_id, 0, happened)
    if start is not None:
        lo = bisect.bisect_left(data.agg_times, start, 0, happened)
    if end is not None:
        hi = bisect.bisect_right(data.agg_times, end, 0, happened)
    return lo, max(lo, hi)


def _agg_json(a: AggTrade) -> dict[str, Any]:
    return {"a": a.agg_id, "p": a.price, "q": a.qty, "f": a.first_id, "l": a.last_id, "T": a.time,
            "m": a.is_buyer_maker, "M": True}


def recent_trades(ctx: RestContext, params: Params) -> Answer:
    """``/api/v3/trades``: the most recent ``limit`` raw trades."""
    data = ctx.symbol(params)
    limit = limit_param(params)
    if data is None:
        return 200, []
    happened = data.raw_happened(ctx.now_ms())
    rows = data.raw[max(0, happened - limit):happened]
    return 200, [{"id": t.id, "price": t.price, "qty": t.qty, "quoteQty": _quote(t.price, t.qty), "time": t.time,
                  "isBuyerMaker": t.is_buyer_maker, "isBestMatch": True} for t in rows]


def _quote(price: str, qty: str) -> str:
    from decimal import Decimal

    return format(Decimal(price) * Decimal(qty), "f")


def klines(ctx: RestContext, params: Params) -> Answer:
    """``/api/v3/klines`` built from the happened raw trades with ``dope.bars.build_bars``."""
    data = ctx.symbol(params)
    interval_ms = _interval_ms(params.get("interval"))
    limit = limit_param(params)
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    if data is None:
        return 200, []
    frame = build_bars(data.trade_arrays(data.raw_happened(ctx.now_ms())), data.symbol, interval_ms)
    if start is not None:
        frame = frame[frame["close_time"] >= start]
    if end is not None:
        frame = frame[frame["open_time"] <= end]
    frame = frame.head(limit) if start is not None else frame.tail(limit)
    return 200, [_kline_row(row) for row in frame.itertuples(index=False)]


def _interval_ms(text: str | None) -> int:
    if not text:
        raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
    if text not in INTERVALS:
        raise ApiError(400, -1120, "Invalid interval.")
    try:
        return parse_interval(text)
    except ValueError:
        raise ApiError(400, -1120, f"Invalid interval: the fake does not build {text} klines.") from None


def _kline_row(row: Any) -> list[Any]:
    def dec(x: float) -> str:
        return f"{x:.8f}"

    return [int(row.open_time), dec(row.open), dec(row.high), dec(row.low), dec(row.close), dec(row.volume),
            int(row.close_time), dec(row.quote_volume), int(row.count), dec(row.taker_buy_volume),
            dec(row.taker_buy_quote_volume), "0"]


Handler = Callable[[RestContext, Params], Answer]
WeightFn = Callable[[Params], int]


def _const(weight: int) -> WeightFn:
    return lambda params: weight


DEFAULT_ROUTES: dict[tuple[str, str], tuple[WeightFn, Handler]] = {
    ("GET", "/api/v3/ping"): (_const(1), ping),
    ("GET", "/api/v3/time"): (_const(1), server_time),
    ("GET", "/api/v3/exchangeInfo"): (_const(20), exchange_info),
    ("GET", "/api/v3/aggTrades"): (_const(4), agg_trades),
    ("GET", "/api/v3/trades"): (_const(25), recent_trades),
    ("GET", "/api/v3/klines"): (_const(2), klines),
}
"""Routes by (method, path): weight and handler. Add e.g. ``("POST", "/api/v3/order")`` the same way."""


def load_exchange_info(shared_data: Path | None, data: Mapping[str, SymbolData]) -> dict[str, Any]:
    """The real 2021 capture (when present) with any replayed symbol it lacks added; else a generated one."""
    real = _read_real(str(shared_data / REAL_EXCHANGE_INFO)) if shared_data is not None else None
    info = json.loads(json.dumps(real)) if real is not None else _generated_skeleton()
    listed = {s["symbol"] for s in info["symbols"]}
    info["symbols"].extend(generated_symbol(name) for name in sorted(data) if name not in listed)
    return info


@lru_cache(maxsize=4)
def _read_real(path: str) -> dict[str, Any] | None:
    if not Path(path).is_file():
        return None
    with gzip.open(path, "rt") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def _generated_skeleton() -> dict[str, Any]:
    return {"timezone": "UTC", "serverTime": 0, "exchangeFilters": [], "symbols": [], "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}]}


def generated_symbol(name: str) -> dict[str, Any]:
    """A minimal exchange-info entry for a USDT pair."""
    base = name[:-4] if name.endswith("USDT") else name[:3]
    return {
        "symbol": name, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": name[len(base):], "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "isSpotTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
             "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        ],
        "permissions": ["SPOT"],
    }
