"""Test helpers around the real broker: reset topics, produce, read topics back, wait for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.common.kafka import ensure_topics
from services.common.topics import TOPICS


async def reset_topics(bootstrap: str) -> None:
    """Delete every non-internal topic (services' changelogs included) and recreate the registry's."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if not t.startswith("__")]
        if doomed:
            await admin.delete_topics(doomed)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                remaining = set(doomed) & set(await admin.list_topics())
                if not remaining:
                    break
                await asyncio.sleep(0.2)
            else:
                raise TimeoutError(f"topics not deleted: {remaining}")
    finally:
        await admin.close()
    # Re-creating a just-deleted name can race with the broker's cleanup: retry briefly.
    deadline = time.monotonic() + 60
    while True:
        try:
            await ensure_topics(bootstrap, TOPICS)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


async def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> int:
    """Produce (key, value, headers) records in order; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    count = 0
    try:
        futures = []
        for key, value, headers in records:
            futures.append(await producer.send(topic, value, key=key, headers=headers or []))
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every record now on a topic (all partitions, from the beginning up to the current end)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
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


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """A consumer group's committed offsets: (topic, partition) → offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()}


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> None:
    """Poll until condition() is true; fail with `message` after timeout. No fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        await asyncio.sleep(interval)
