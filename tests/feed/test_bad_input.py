"""A misbehaving exchange (garbage, duplicates, frames over 1 MiB, over the socket limit) never crashes."""

from __future__ import annotations

import asyncio

from services.common.raw import RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed import metrics
from services.feed.connector import Connector, ConnectorOptions
from services.feed.publisher import KafkaPublisher
from services.feed.simulator.server import Simulator, malformed_frames
from tests.feed.conftest import control, sim_url
from tests.kafka_helpers import read_topic, wait_for


async def test_garbage_and_oversized_frames_are_counted_and_the_connector_carries_on(
    topics: str, sim: Simulator
) -> None:
    oversized_before = metrics.OVERSIZED.labels("binance")._value.get()
    publisher = KafkaPublisher(topics)
    await publisher.start()
    connector = Connector(
        "binance",
        "binance-bad",
        sim_url(sim, "binance"),
        ["BTCUSDT"],
        publisher,
        ConnectorOptions(max_message_bytes=3 * 1024 * 1024, backoff_initial_s=0.05),
    )
    task = asyncio.create_task(connector.run())
    try:
        await wait_for(lambda: connector._last_frame_ns > 0, message="a first frame")
        first = connector.connection_id
        await control(sim, "malformed", exchange="binance", count=4)
        await control(sim, "duplicate", exchange="binance", count=2)
        await control(sim, "oversize", exchange="binance", bytes=1024 * 1024 + 10)
        await wait_for(
            lambda: metrics.OVERSIZED.labels("binance")._value.get() == oversized_before + 1,
            message="the 1 MiB+ frame to be counted",
        )
        sent_before = len(sim.history["binance"][0].sent or [])
        await wait_for(
            lambda: len(sim.history["binance"][0].sent or []) > sent_before + 5,
            message="more trades after the bad frames",
        )
        assert connector.connections == 1 and connector.connection_id == first and not task.done()
        # A frame over the socket limit closes that connection; the connector reconnects.
        await control(sim, "oversize", exchange="binance", bytes=4 * 1024 * 1024)
        await wait_for(lambda: connector.connections == 2, message="a reconnect after a 4 MiB frame")
    finally:
        connector.stop()
        await asyncio.wait_for(task, 10)
    assert await publisher.flush(30)
    await publisher.stop()

    mine = [r for r in await read_topic(topics, RAW_TOPICS["binance"]) if r.key == first.encode()]
    values = [r.value for r in mine]
    for text in malformed_frames("binance", 4)[:2]:  # the two not-JSON ones are time-independent
        assert text.encode() in values  # garbage is published raw: the normalizer dead-letters it
    seqs = [RawHeaders.from_kafka(r.headers).seq for r in mine]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
    # The oversized frame kept its number, so its hole in seq is visible downstream.
    assert len(set(range(1, seqs[-1] + 1)) - set(seqs)) == 1
    duplicates = [v for v in set(values) if values.count(v) > 1]
    assert len(duplicates) >= 1  # duplicate frames are passed on as received (dedup is downstream)
