"""Parsing of Binance stream frames and REST bodies, and the per-symbol sequencer."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from dope.market.binance_rest import Backoff
from dope.market.binance_sequencer import Sequencer
from dope.market.binance_wire import (
    MalformedFrame,
    ServerShutdown,
    StreamReply,
    parse_exchange_info,
    parse_rest_agg_trades,
    parse_rest_trades,
    parse_stream_frame,
    stream_names,
    stream_symbol,
)
from dope.messages import Trade
from tests.conftest import BUNDLED_DATA, require_shared_data
from tests.fakes.binance_faults import MALFORMED_FRAMES

SPEC_AGG = ('{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,'
            '"p":"0.35280000","q":"58.00000000","f":19862790,"l":19862790,"T":1633998523963,"m":false,"M":true}}')


def test_real_agg_trade_from_spec() -> None:
    trade = parse_stream_frame(SPEC_AGG)
    assert trade == Trade(symbol="NKNUSDT", event_time=1633998523963, trade_id=15683430, price=0.3528, qty=58.0,
                          is_buyer_maker=False, first_trade_id=19862790, last_trade_id=19862790)


def test_bytes_and_raw_stream_payloads_parse_alike() -> None:
    raw_payload = json.dumps(json.loads(SPEC_AGG)["data"])
    assert parse_stream_frame(SPEC_AGG.encode()) == parse_stream_frame(raw_payload) == parse_stream_frame(SPEC_AGG)


def test_real_trade_lines_match_the_bundled_csv() -> None:
    path = require_shared_data("binance", "ws", "btcusdt_trade-spot-2024-08-08T2354Z_2024-08-09T0005Z.log.gz")
    with gzip.open(path, "rt") as handle:
        trades = [parse_stream_frame(line.split(" ", 1)[1]) for line in handle]
    with gzip.open(BUNDLED_DATA / "BTCUSDT-trades-spot-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz", "rt") as handle:
        rows = [line.strip().split(",") for line in list(handle)[1:]]
    assert len(trades) == len(rows) == 19_904
    for trade, row in zip(trades, rows, strict=True):
        assert isinstance(trade, Trade)
        assert (trade.symbol, trade.trade_id, trade.price, trade.qty, trade.event_time, trade.is_buyer_maker) == (
            "BTCUSDT", int(row[0]), float(row[1]), float(row[2]), int(row[4]), row[5] == "True")
        assert trade.first_trade_id == trade.last_trade_id == -1


def test_real_cryptofeed_agg_trades_parse() -> None:
    path = require_shared_data("binance", "ws", "cryptofeed-BINANCE.ws.1.0-2021-10-12.log.gz")
    with gzip.open(path, "rt") as handle:
        lines = [line.split(": ", 1)[1] for line in handle if "@aggTrade" in line and ": {" in line]
    trades = [parse_stream_frame(line) for line in lines]
    assert len(trades) == 2
    assert [t.symbol for t in trades if isinstance(t, Trade)] == ["NKNUSDT", "LRCBTC"]


def test_server_shutdown_combined_and_raw() -> None:
    combined = '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    assert parse_stream_frame(combined) == ServerShutdown(1770123456789)
    assert parse_stream_frame('{"e":"serverShutdown","E":1770123456789}') == ServerShutdown(1770123456789)


def test_control_replies_are_not_trades() -> None:
    assert isinstance(parse_stream_frame('{"result":null,"id":1}'), StreamReply)
    assert isinstance(parse_stream_frame('{"code":0,"msg":"Unknown property","id":3}'), StreamReply)


@pytest.mark.parametrize(("kind", "problem"), [
    ("garbage", "not JSON"), ("bad_json", "not JSON"), ("wrong_types", "Expected `int`, got `str`"),
    ("unknown_event", "depthUpdate"),
])
def test_malformed_frames_raise_naming_the_problem(kind: str, problem: str) -> None:
    with pytest.raises(MalformedFrame, match=problem):
        parse_stream_frame(MALFORMED_FRAMES[kind])


def test_wrong_price_type_is_malformed() -> None:
    frame = SPEC_AGG.replace('"p":"0.35280000"', '"p":"abc"')
    with pytest.raises(MalformedFrame, match=r"\$\.data\.p"):
        parse_stream_frame(frame)
    assert stream_symbol(frame) == "NKNUSDT"
    assert stream_symbol("garbage") == "?"


def test_rest_bodies() -> None:
    body = b'[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27783,"T":1498793709153,"m":true,"M":true}]'
    (trade,) = parse_rest_agg_trades(body, "ETHBTC")
    assert (trade.trade_id, trade.price, trade.raw_count, trade.is_buyer_maker) == (26129, 0.01633102, 3, True)
    raw = (b'[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,'
           b'"isBuyerMaker":true,"isBestMatch":true}]')
    assert parse_rest_trades(raw, "X")[0].trade_id == 28457
    assert parse_exchange_info(b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","x":1}]}') == {"BTCUSDT": "TRADING"}
    assert stream_names(["BTCUSDT"], "aggTrade") == ["btcusdt@aggTrade"]


def _t(i: int, time: int | None = None) -> Trade:
    return Trade(symbol="X", event_time=i if time is None else time, trade_id=i, price=1.0, qty=1.0,
                 is_buyer_maker=False)


def test_sequencer_releases_contiguous_ids_once() -> None:
    seq = Sequencer(next_id=10)
    out: list[Trade] = []
    order = [12, 10, 10, 14, 11, 9, 13, 12]
    for i in order:
        seq.offer(_t(i), out, now=1.0)
    assert [t.trade_id for t in out] == [10, 11, 12, 13, 14]
    assert seq.duplicates == 3 and seq.held == 0 and seq.gap_since is None


def test_sequencer_reports_gap_age_and_skips_before_min_time() -> None:
    seq = Sequencer(next_id=1, min_time=3)
    out: list[Trade] = []
    seq.offer(_t(1), out, now=0.0)
    seq.offer(_t(3), out, now=5.0)
    assert seq.gap_since == 5.0 and out == []
    seq.offer(_t(2), out, now=6.0)
    assert [t.trade_id for t in out] == [3]
    assert seq.skip_to(10, out, now=7.0) == 6 and seq.next_id == 10


def test_backoff_is_bounded_full_jitter_and_seeded() -> None:
    a = Backoff(100, 1_000, random.Random(5))
    b = Backoff(100, 1_000, random.Random(5))
    delays = [a.delay_ms(n) for n in range(12)]
    assert delays == [b.delay_ms(n) for n in range(12)]
    assert all(0 <= d <= min(1_000, 100 * 2**n) for n, d in enumerate(delays))
    assert max(delays[5:]) > 100
