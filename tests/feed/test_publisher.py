"""The publisher's own batching: frames join the batch aiokafka already holds until its sender takes it."""

from __future__ import annotations

import asyncio

from services.common.instruments import default_instruments
from services.common.raw import RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed import metrics
from services.feed.connector import Connector, ConnectorOptions
from services.feed.publisher import KafkaPublisher, _headers
from services.feed.records import RawRecord
from services.feed.simulator.server import Simulator
from tests.kafka_helpers import read_topic, wait_for


def _produce_errors() -> float:
    return sum(
        s.value for f in metrics.PRODUCE_ERRORS.collect() for s in f.samples if s.name.endswith("_total")
    )


async def test_a_busy_connection_is_published_exactly_once_with_no_produce_error(topics: str) -> None:
    """Thousands of Binance frames a second, several per socket read, one connection.

    Frames are appended to a batch after it was handed to aiokafka; one appended after the sender
    took it would fall outside the batch's idempotent sequence range (the broker answers
    OutOfOrderSequenceNumber and the records are re-sent: duplicates). Neither may happen.
    """
    simulator = Simulator(default_instruments(), seed=5, rate=2500.0, keep_sent=True, bursts=False)
    await simulator.start("127.0.0.1", 0)
    errors_before = _produce_errors()
    publisher = KafkaPublisher(topics)
    await publisher.start()
    natives = [inst.native for inst in default_instruments().for_exchange("binance")]
    connector = Connector(
        "binance",
        "binance-busy",
        f"ws://127.0.0.1:{simulator.port}/binance/stream",
        natives,
        publisher,
        ConnectorOptions(stale_after_s=10),
    )
    task = asyncio.create_task(connector.run())
    try:
        await wait_for(lambda: publisher.acked >= 12_000, timeout=60, message="12,000 frames acknowledged")
    finally:
        connector.stop()
        await asyncio.wait_for(task, 10)
        await simulator.stop()
    assert await publisher.flush(30)
    await publisher.stop()
    assert _produce_errors() == errors_before

    key = connector.connection_id.encode()
    mine = [r for r in await read_topic(topics, RAW_TOPICS["binance"], timeout=30) if r.key == key]
    sent = simulator.history["binance"][0].sent or []
    assert len(mine) >= 12_000
    assert [r.value for r in mine] == [text.encode() for text in sent[: len(mine)]]
    assert [RawHeaders.from_kafka(r.headers).seq for r in mine] == list(range(1, len(mine) + 1))


def test_publisher_headers_are_the_record_headers() -> None:
    for kind in ("frame", "marker"):
        record = RawRecord("coinbase", b"{}", 1_795_089_600_000_000_123, "coinbase-0123456789ab", 7, kind)
        assert _headers(record, record.key) == record.headers()
