"""SSE: an update published on market.crypto.ohlcv.live reaches a connected client (real broker)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from bench.query_data import candles_of, make_trades
from services.common.schemas import Candle
from services.common.topics import OHLCV_LIVE
from services.query.app import create_app
from tests.kafka_helpers import produce
from tests.query.conftest import settings_for
from tests.query.server import ApiServer


async def _events(lines, count: int) -> list[tuple[str, str]]:
    """The next `count` (event, data) pairs from an SSE line iterator."""
    events: list[tuple[str, str]] = []
    event = data = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            events.append((event, data))
            event = data = ""
            if len(events) == count:
                return events
    return events


async def test_sse_delivers_live_candle_updates_of_one_symbol(topics, known_lake):
    settings = settings_for(known_lake.data_dir, kafka_bootstrap=topics, query_sse_heartbeat_s=0.5)
    candle = replace(candles_of(make_trades(3), "1m")[0], revision=-1)
    assert candle.symbol == "BTC/USDT"
    other_symbol = replace(candle, symbol="ETH/USDT")
    other_tf = replace(candle, timeframe="5m")
    with ApiServer(create_app(settings)) as server:
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream(
                "GET",
                f"{server.url}/v1/ohlcv/1m/stream",
                params={"symbol": "BTC/USDT", "exchange": "binance"},
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 30) == ": ready"
            records = [(c.live_key.encode(), c.encode(), None) for c in (other_symbol, other_tf, candle)]
            updated = replace(candle, close=candle.close + 1, trade_count=candle.trade_count + 1)
            records.append((updated.live_key.encode(), updated.encode(), None))
            await produce(topics, OHLCV_LIVE, records)
            events = await asyncio.wait_for(_events(lines, 2), 30)
    assert [name for name, _ in events] == ["candle", "candle"]
    assert [Candle.decode(data) for _, data in events] == [candle, updated]
    assert '"close":"' in events[0][1]  # decimals stay strings on the wire


async def test_sse_validates_and_reports_an_unreachable_broker(known_lake):
    settings = settings_for(known_lake.data_dir, kafka_bootstrap="127.0.0.1:1", query_kafka_timeout_s=1.0)
    with ApiServer(create_app(settings)) as server:
        async with httpx.AsyncClient(timeout=60) as http:
            bad = await http.get(f"{server.url}/v1/ohlcv/1m/stream", params={"symbol": "btc"})
            assert bad.status_code == 422
            down = await http.get(f"{server.url}/v1/ohlcv/1m/stream", params={"symbol": "BTC/USDT"})
            assert down.status_code == 503
