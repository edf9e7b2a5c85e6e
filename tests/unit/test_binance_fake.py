"""The fake Binance follows the protocol spec: REST semantics, weights, errors, streams, pings, faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from itertools import pairwise
from typing import Any

import aiohttp
import pandas as pd

from dope.bars import build_bars, resample_bars
from tests.conftest import REPO_ROOT, shared_data_dir
from tests.fakes.binance import FakeBinance, FakeConfig, FaultPlan, StreamFaults, run_in_thread
from tests.fakes.binance_data import RawTrade, aggregate

Scenario = Callable[[FakeBinance, aiohttp.ClientSession], Awaitable[None]]


def run(scenario: Scenario, config: FakeConfig | None = None, faults: FaultPlan | None = None) -> None:
    """Run ``scenario`` against a fake with a stepped clock (speed 0) unless told otherwise."""
    async def main() -> None:
        async with FakeBinance(config=config or FakeConfig(speed=0), faults=faults) as fake, \
                aiohttp.ClientSession() as http:
            await asyncio.wait_for(scenario(fake, http), 15)
    asyncio.run(main())


async def get(fake: FakeBinance, http: aiohttp.ClientSession, path: str,
              **params: Any) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with http.get(fake.rest_url + path, params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, await resp.json(), resp.headers


def test_aggregation_groups_same_time_price_side() -> None:
    raw = [RawTrade(1, "10", "1", 5, True), RawTrade(2, "10", "2", 5, True), RawTrade(3, "10", "1", 5, False),
           RawTrade(4, "11", "1", 5, False), RawTrade(5, "11", "0.5", 6, False)]
    aggs = aggregate(raw, start_id=7)
    assert [(a.agg_id, a.first_id, a.last_id, a.qty) for a in aggs] == [
        (7, 1, 2, "3.00000000"), (8, 3, 3, "1.00000000"), (9, 4, 4, "1.00000000"), (10, 5, 5, "0.50000000")]


def test_bundled_aggregates_cover_every_raw_trade_once() -> None:
    fake = FakeBinance()
    for data in fake.data.values():
        assert data.agg[0].first_id == data.raw[0].id and data.agg[-1].last_id == data.raw[-1].id
        assert all(b.first_id == a.last_id + 1 and b.agg_id == a.agg_id + 1 for a, b in pairwise(data.agg))
        assert sum(Decimal(a.qty) for a in data.agg) == sum(Decimal(t.qty) for t in data.raw)


def test_ping_time_and_used_weight_headers() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        status, body, headers = await get(fake, http, "/api/v3/ping")
        assert (status, body, headers["X-MBX-USED-WEIGHT-1M"]) == (200, {}, "1")
        status, body, headers = await get(fake, http, "/api/v3/time")
        assert body == {"serverTime": fake.clock.now_ms()} and headers["X-MBX-USED-WEIGHT-1M"] == "2"
        _, _, headers = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT")
        assert headers["X-MBX-USED-WEIGHT-1M"] == "6"
        assert [(r.path, r.weight) for r in fake.requests] == [
            ("/api/v3/ping", 1), ("/api/v3/time", 1), ("/api/v3/aggTrades", 4)]
    run(scenario)


def test_exchange_info_lookup_and_unknown_symbol() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        status, body, headers = await get(fake, http, "/api/v3/exchangeInfo", symbol="BTCUSDT")
        assert status == 200 and [s["symbol"] for s in body["symbols"]] == ["BTCUSDT"]
        assert headers["X-MBX-USED-WEIGHT-1M"] == "20"
        status, body, _ = await get(fake, http, "/api/v3/exchangeInfo", symbols='["ETHUSDT","BTCUSDT"]')
        assert [s["symbol"] for s in body["symbols"]] == ["ETHUSDT", "BTCUSDT"]
        status, body, _ = await get(fake, http, "/api/v3/exchangeInfo", symbol="NOPEUSDT")
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
        status, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="NOPEUSDT")
        assert (status, body["code"]) == (400, -1121)
    run(scenario)


def test_exchange_info_serves_the_real_capture_when_present() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        _, body, _ = await get(fake, http, "/api/v3/exchangeInfo")
        names = {s["symbol"] for s in body["symbols"]}
        expected = 1695 if (shared_data_dir() / "binance/rest/exchangeInfo-2021-10-12.json.gz").is_file() else 2
        assert len(names) == expected and {"BTCUSDT", "ETHUSDT"} <= names
    run(scenario, FakeConfig(speed=0, shared_data=shared_data_dir()))


def test_agg_trades_only_answer_what_happened() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        _, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT")
        assert body == []
        fake.clock.step(30_000)
        now = fake.clock.now_ms()
        _, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT", limit=1000)
        data = fake.data["BTCUSDT"]
        assert [r["a"] for r in body] == [a.agg_id for a in data.agg if a.time <= now][-1000:]
        assert body[0].keys() == {"a", "p", "q", "f", "l", "T", "m", "M"} and isinstance(body[0]["p"], str)
    run(scenario)


def test_agg_trades_paging_and_time_windows() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        fake.clock.step(10**9)
        data = fake.data["ETHUSDT"]
        ids: list[int] = []
        from_id = data.agg[0].agg_id
        while True:
            _, page, _ = await get(fake, http, "/api/v3/aggTrades", symbol="ETHUSDT", fromId=from_id, limit=1000)
            ids += [r["a"] for r in page]
            if len(page) < 1000:
                break
            from_id = page[-1]["a"] + 1
        assert ids == data.agg_ids
        start, end = data.agg[100].time, data.agg[200].time
        _, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="ETHUSDT", startTime=start, endTime=end)
        assert [r["a"] for r in body] == [a.agg_id for a in data.agg if start <= a.time <= end]
        _, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="ETHUSDT", endTime=end, limit=5)
        assert [r["a"] for r in body] == [a.agg_id for a in data.agg if a.time <= end][-5:]
    run(scenario)


def test_rest_parameter_errors() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        status, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT", limit=1001)
        assert (status, body["code"]) == (400, -1100)
        status, body, _ = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=1, startTime=1)
        assert (status, body["code"]) == (400, -1128)
        status, body, _ = await get(fake, http, "/api/v3/aggTrades")
        assert (status, body["code"]) == (400, -1102) and "symbol" in body["msg"]
        status, body, _ = await get(fake, http, "/api/v3/klines", symbol="BTCUSDT", interval="7m")
        assert (status, body["code"]) == (400, -1120)
    run(scenario)


def test_recent_trades_and_klines_from_happened_trades() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        fake.clock.step(200_000)
        data = fake.data["BTCUSDT"]
        happened = data.raw_happened(fake.clock.now_ms())
        _, body, headers = await get(fake, http, "/api/v3/trades", symbol="BTCUSDT", limit=3)
        assert [r["id"] for r in body] == [t.id for t in data.raw[happened - 3:happened]]
        assert headers["X-MBX-USED-WEIGHT-1M"] == "25"
        _, rows, _ = await get(fake, http, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
        bars = build_bars(data.trade_arrays(happened), "BTCUSDT", 60_000)
        assert len(rows) == len(bars) and all(len(r) == 12 and r[11] == "0" for r in rows)
        assert [r[0] for r in rows] == bars["open_time"].tolist()
        assert [r[8] for r in rows] == bars["count"].tolist()
        pd.testing.assert_series_equal(pd.Series([float(r[5]) for r in rows]), bars["volume"].round(8),
                                       check_names=False)
    run(scenario)


KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                 "taker_buy_volume", "taker_buy_quote_volume")


def test_one_second_klines_rebuild_the_ten_second_bars() -> None:
    """What a warm-up from 1 s klines relies on: resampled, they are the 10 s bars of the same trades."""
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        fake.clock.step(300_000)
        data = fake.data["BTCUSDT"]
        start = data.raw_times[0] // 10_000 * 10_000
        rows: list[list[Any]] = []
        page: list[list[Any]] = []
        while not rows or len(page) == 1000:
            _, page, _ = await get(fake, http, "/api/v3/klines", symbol="BTCUSDT", interval="1s",
                                   startTime=rows[-1][0] + 1000 if rows else start, limit=1000)
            rows.extend(page)
        assert [r[0] for r in rows] == list(range(rows[0][0], rows[-1][0] + 1, 1000))
        klines = pd.DataFrame([r[:11] for r in rows], columns=KLINE_COLUMNS).astype(
            {c: float for c in KLINE_COLUMNS if c not in ("open_time", "close_time", "count")})
        klines["empty"] = klines["count"] == 0
        klines["symbol"] = "BTCUSDT"
        klines["first_trade_id"] = klines["last_trade_id"] = -1  # klines carry no trade ids
        klines["vwap"] = klines["quote_volume"] / klines["volume"].where(klines["volume"] > 0)
        rebuilt = resample_bars(klines, 1_000, 10_000)
        bars = build_bars(data.trade_arrays(data.raw_happened(fake.clock.now_ms())), "BTCUSDT", 10_000)
        bars = bars[bars["open_time"] <= rebuilt["open_time"].iloc[-1]].reset_index(drop=True)
        exact = ["open_time", "close_time", "open", "high", "low", "close", "count", "empty"]
        pd.testing.assert_frame_equal(rebuilt[exact], bars[exact])
        sums = ["volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume", "vwap"]
        pd.testing.assert_frame_equal(rebuilt[sums], bars[sums], rtol=1e-9, atol=1e-8)  # 8-decimal wire strings
    run(scenario)


def test_rest_faults_on_demand() -> None:
    plan = FaultPlan()
    plan.fail_next_rest(429, retry_after=3, path="/api/v3/aggTrades")
    plan.fail_next_rest(418, retry_after=120)
    plan.fail_next_rest(503)

    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        status, body, headers = await get(fake, http, "/api/v3/ping")
        assert (status, body["code"], headers["Retry-After"]) == (418, -1003, "120")
        status, body, headers = await get(fake, http, "/api/v3/aggTrades", symbol="BTCUSDT")
        assert (status, body["code"], headers["Retry-After"]) == (429, -1003, "3")
        status, body, _ = await get(fake, http, "/api/v3/time")
        assert status == 503 and body["code"] == -1008
        status, _, _ = await get(fake, http, "/api/v3/time")
        assert status == 200
        assert [r.status for r in fake.requests] == [418, 429, 503, 200]
    run(scenario, faults=plan)


def test_streams_combined_raw_and_control_frames() -> None:
    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(fake.ws_url + "/ws/btcusdt@aggTrade") as ws:
            await ws.send_str('{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":1}')
            assert json.loads((await ws.receive(timeout=5)).data) == {"result": None, "id": 1}
            await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            assert json.loads((await ws.receive(timeout=5)).data) == {
                "result": ["btcusdt@aggTrade", "ethusdt@trade"], "id": 2}
            await ws.send_str('{"method":"GET_PROPERTY","params":["combined"],"id":3}')
            assert json.loads((await ws.receive(timeout=5)).data) == {"result": False, "id": 3}
            await ws.send_str('{"method":"UNSUBSCRIBE","params":["ethusdt@trade"],"id":4}')
            assert json.loads((await ws.receive(timeout=5)).data) == {"result": None, "id": 4}
            await ws.send_str("nope")
            assert json.loads((await ws.receive(timeout=5)).data)["code"] == 3
            fake.clock.step(2_000)
            first = json.loads((await ws.receive(timeout=5)).data)
            assert first["e"] == "aggTrade" and first["a"] == fake.data["BTCUSDT"].agg[0].agg_id
        async with http.ws_connect(fake.ws_url + "/stream?streams=ethusdt@trade") as ws:
            fake.clock.step(5_000)
            msg = json.loads((await ws.receive(timeout=5)).data)
            assert msg["stream"] == "ethusdt@trade" and msg["data"]["e"] == "trade"
            assert msg["data"]["t"] > fake.data["ETHUSDT"].raw[0].id - 1
    run(scenario)


def test_silent_client_is_closed_at_the_pong_timeout_and_connections_cut() -> None:
    config = FakeConfig(speed=0, ping_interval_s=0.25, pong_timeout_s=0.5, connection_lifetime_s=1.2)

    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(fake.ws_url + "/ws/btcusdt@trade", autoping=False) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING
            while msg.type == aiohttp.WSMsgType.PING:
                msg = await ws.receive(timeout=5)
        async with http.ws_connect(fake.ws_url + "/ws/btcusdt@trade") as ws:  # autoping answers
            while (await ws.receive(timeout=5)).type != aiohttp.WSMsgType.CLOSE:
                pass
        await asyncio.sleep(0.1)
        assert fake.closed_reasons == ["pong timeout", "24h cut"]
    run(scenario, config)


def test_stream_faults_malformed_shutdown() -> None:
    faults = FaultPlan(streams=[StreamFaults(malformed={1: "bad_json"}, shutdown_after=2)])

    async def scenario(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(fake.ws_url + "/stream?streams=btcusdt@aggTrade") as ws:
            fake.clock.step(60_000)
            texts = [(await ws.receive(timeout=5)).data for _ in range(4)]
        assert json.loads(texts[0])["data"]["e"] == "aggTrade"
        assert texts[1].startswith('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,')
        assert json.loads(texts[3])["data"]["e"] == "serverShutdown"
    run(scenario, faults=faults)


def test_runs_as_a_subprocess_printing_its_port() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.binance", "--port", "0", "--speed", "0"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT ")
        port = int(line.split()[1])

        async def ping() -> Any:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/api/v3/ping", timeout=aiohttp.ClientTimeout(5)) as resp:
                return await resp.json()
        assert asyncio.run(ping()) == {}
    finally:
        proc.kill()
        proc.wait(10)


def test_runs_in_a_thread_for_synchronous_fixtures() -> None:
    with run_in_thread(FakeBinance(config=FakeConfig(speed=0))) as fake:
        async def scenario() -> tuple[int, Any]:
            async with aiohttp.ClientSession() as http:
                status, body, _ = await get(fake, http, "/api/v3/time")
                async with http.ws_connect(fake.ws_url + "/ws/btcusdt@trade") as ws:
                    await asyncio.sleep(0.05)
                    killed = fake.kill_connections()
                    msg = await ws.receive(timeout=5)
                    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
                return killed, body
        killed, body = asyncio.run(scenario())
    assert killed == 1 and body == {"serverTime": fake.first_time_ms - 1}
