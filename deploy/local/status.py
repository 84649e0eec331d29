"""`status`: each process's supervisor state and health (/metrics answers), and consumer-group lag.

Lag = end offset (last stable offset, as read_committed consumers see it) minus the group's
committed offset, summed per (group, topic). The stream services are consumer groups like any other
(their offsets are committed inside their Kafka transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


async def consumer_lag(bootstrap: str, timeout_ms: int = 5000) -> list[GroupLag]:
    """Lag of every consumer group that has committed offsets, per (group, topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        request_timeout_ms=timeout_ms,
    )
    await admin.start()
    await consumer.start()
    try:
        groups = sorted(group for group, *_ in await admin.list_consumer_groups())
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        all_tps = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = await consumer.end_offsets(all_tps) if all_tps else {}
        rows: list[GroupLag] = []
        for group in groups:
            per_topic: dict[str, list[TopicPartition]] = {}
            for tp in committed[group]:
                per_topic.setdefault(tp.topic, []).append(tp)
            for topic, tps in sorted(per_topic.items()):
                rows.append(
                    GroupLag(
                        group,
                        topic,
                        len(tps),
                        sum(committed[group][tp] for tp in tps),
                        sum(ends.get(tp, 0) for tp in tps),
                    )
                )
        return rows
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()


def consumer_lag_sync(bootstrap: str) -> list[GroupLag]:
    return asyncio.run(consumer_lag(bootstrap))
