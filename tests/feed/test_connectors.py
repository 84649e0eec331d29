"""Each connector subscribes exactly as its exchange expects and publishes every frame, in order."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.raw import KIND_FRAME, RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed.connector import Connector, ConnectorOptions
from services.feed.publisher import KafkaPublisher
from services.feed.simulator.server import Simulator
from tests.feed.conftest import sim_url
from tests.kafka_helpers import read_topic, wait_for

SYMBOLS = {
    "binance": ["BTCUSDT", "ETHUSDT"],
    "kraken": ["BTC/USD", "ETH/USD"],
    "coinbase": ["BTC-USD", "ETH-USD"],
}
EXPECTED_SUBSCRIBE = {
    "binance": [],  # the combined-stream URL carries the subscription
    "kraken": ['{"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}}'],
    "coinbase": [
        '{"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"}',
        '{"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "heartbeats"}',
    ],
}
EXPECTED_PATH = {
    "binance": "/binance/stream?streams=btcusdt@trade/ethusdt@trade",
    "kraken": "/kraken/v2",
    "coinbase": "/coinbase",
}


@pytest.mark.parametrize("exchange", ["binance", "kraken", "coinbase"])
async def test_connector_subscribes_and_publishes_every_frame_in_order(
    topics: str, sim: Simulator, exchange: str
) -> None:
    started_ns = time.time_ns()
    publisher = KafkaPublisher(topics)
    await publisher.start()
    connector = Connector(
        exchange,
        f"{exchange}-test",
        sim_url(sim, exchange),
        SYMBOLS[exchange],
        publisher,
        ConnectorOptions(stale_after_s=10),
    )
    task = asyncio.create_task(connector.run())
    try:
        await wait_for(
            lambda: sim.history[exchange] and len(sim.history[exchange][0].sent or []) >= 25,
            message=f"25 {exchange} frames from the simulator",
        )
        await wait_for(lambda: publisher.acked >= 20, message="20 frames acknowledged by Kafka")
    finally:
        connector.stop()
        await asyncio.wait_for(task, 10)
    assert await publisher.flush(30)
    await publisher.stop()

    server_side = sim.history[exchange]
    assert len(server_side) == 1
    assert server_side[0].path == EXPECTED_PATH[exchange]
    assert server_side[0].received == EXPECTED_SUBSCRIBE[exchange]

    key = connector.connection_id.encode()
    assert (
        connector.connection_id.startswith(f"{exchange}-")
        and len(connector.connection_id) == len(exchange) + 13
    )
    mine = [r for r in await read_topic(topics, RAW_TOPICS[exchange]) if r.key == key]
    sent = server_side[0].sent or []
    assert len(mine) >= 20
    assert [r.value for r in mine] == [text.encode() for text in sent[: len(mine)]]
    headers = [RawHeaders.from_kafka(r.headers) for r in mine]
    assert [h.seq for h in headers] == list(range(1, len(mine) + 1))
    assert {h.connection_id for h in headers} == {connector.connection_id}
    assert {h.kind for h in headers} == {KIND_FRAME}
    stamps = [h.received_at_ns for h in headers]
    assert stamps == sorted(stamps) and started_ns <= stamps[0] <= stamps[-1] <= time.time_ns()
    assert len({r.partition for r in mine}) == 1
