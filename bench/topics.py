"""Read a topic to its current end (read_committed), for the benchmarks' checks and latency probes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import end_offsets


async def _batches(bootstrap: str, topic: str, timeout: float, max_records: int) -> AsyncIterator[list[Any]]:
    """The committed records now on a topic, all partitions, from the beginning to the current end, as
    the consumer fetches them (lists of records); TimeoutError when the end is not reached in time."""
    ends = {p: off for (_, p), off in (await end_offsets(bootstrap, [topic])).items()}
    if not any(ends.values()):
        return  # an empty (or missing) topic: nothing to read, no consumer to stop
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
            for messages in batch.values():
                yield messages
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read {topic} to its end: {pending}")
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Any]:
    """Every committed record now on a topic, all partitions, from the beginning to the current end."""
    return [record async for messages in _batches(bootstrap, topic, timeout, 10000) for record in messages]


async def count_records(bootstrap: str, topic: str, timeout: float = 300.0) -> int:
    """How many committed records a topic holds now (read to the end without keeping them)."""
    return sum([len(messages) async for messages in _batches(bootstrap, topic, timeout, 20000)])
