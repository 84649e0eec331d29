"""bench.topics reads a topic to its current end, read_committed: every committed record, no aborted one."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from bench.topics import count_records, read_all
from services.common.topics import GAPS, TRADES_DLQ
from tests.kafka_helpers import produce


async def test_read_all_and_count_records_see_committed_records_only(fresh_topics: str) -> None:
    bootstrap = fresh_topics
    assert await read_all(bootstrap, GAPS) == [] and await count_records(bootstrap, GAPS) == 0
    plain = [(str(i % 3).encode(), f"plain-{i}".encode(), None) for i in range(25)]
    await produce(bootstrap, TRADES_DLQ, plain)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="bench-topics-test")
    await producer.start()
    try:
        await producer.begin_transaction()
        for i in range(5):
            await producer.send(TRADES_DLQ, f"aborted-{i}".encode(), key=b"0")
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(3):
                await producer.send(TRADES_DLQ, f"committed-{i}".encode(), key=str(i).encode())
    finally:
        await producer.stop()
    values = sorted(r.value.decode() for r in await read_all(bootstrap, TRADES_DLQ, timeout=60))
    assert values == sorted([f"plain-{i}" for i in range(25)] + [f"committed-{i}" for i in range(3)])
    assert await count_records(bootstrap, TRADES_DLQ, timeout=60) == 28
