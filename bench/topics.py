"""Read a topic to its current end (read_committed), for the benchmarks' checks and latency probes."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import end_offsets


async def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Any]:
    """Every committed record now on a topic, all partitions, from the beginning to the current end."""
    ends = {p: off for (_, p), off in (await end_offsets(bootstrap, [topic])).items()}
    if not any(ends.values()):
        return []  # an empty (or missing) topic: nothing to read, no consumer to stop
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for messages in batch.values():
                records.extend(messages)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read {topic} to its end: {pending}")
    finally:
        await consumer.stop()
    return records


async def count_records(bootstrap: str, topic: str, timeout: float = 300.0) -> int:
    """How many committed records a topic holds now (read to the end without keeping them)."""
    ends = {p: off for (_, p), off in (await end_offsets(bootstrap, [topic])).items()}
    if not any(ends.values()):
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    count = 0
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20000)
            count += sum(len(messages) for messages in batch.values())
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read {topic} to its end: {pending}")
    finally:
        await consumer.stop()
    return count
