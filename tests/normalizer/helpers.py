"""Helpers of the normalizer tests: a worker process, reading what a topic gained since a mark."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from services.common.metrics import free_port
from services.common.stream import Output
from services.normalizer.processor import FORWARD_PREFIX
from tests.kafka_helpers import end_offsets
from tests.processes import ServiceProcess


def worker(env: dict[str, str], app_id: str, name: str, **extra: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    proc = ServiceProcess(
        "services.normalizer",
        env={**env, "K2_NORMALIZER_APP_ID": app_id, "K2_METRICS_PORT": str(port), **extra},
        name=name,
    )
    return proc, f"http://127.0.0.1:{port}/metrics"


def new_app_id() -> str:
    return f"norm-test-{uuid.uuid4().hex[:8]}"


async def marks(bootstrap: str, *topics: str) -> dict[str, dict[int, int]]:
    return {topic: await end_offsets(bootstrap, topic) for topic in topics}


async def read_since(
    bootstrap: str, topic: str, since: dict[int, int] | None = None, timeout: float = 10.0
) -> list[Any]:
    """Committed records of `topic` after the `since` offsets, up to the current end (read_committed)."""
    since = since or {}
    ends = await end_offsets(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in ends if ends[p] > since.get(p, 0)]
    if not tps:  # (stopping an aiokafka consumer right after its start raises CancelledError)
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, since.get(tp.partition, 0))
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records.extend(messages)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return records


def partition_of(key: str, partitions: int = 3) -> int:
    return DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))


def keys_on_distinct_partitions(prefix: str, count: int = 2, partitions: int = 3) -> list[str]:
    """Connection ids whose records land on `count` different partitions of a raw topic."""
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < count:
        key = f"{prefix}-{i}"
        chosen.setdefault(partition_of(key, partitions), key)
        i += 1
    return list(chosen.values())


def forwards(outputs: list[Output]) -> list[dict[str, Any]]:
    """The envelopes of stage 1's forwards (dead letters and gaps on their way through stage 2)."""
    return [orjson.loads(value) for _t, key, value, _p in outputs if key and key.startswith(FORWARD_PREFIX)]


def delivered(outputs: list[Output]) -> list[tuple[str, bytes | None, bytes | None]]:
    """Stage 1's outputs as stage 2 publishes them: each forward unwrapped to its topic, key, value."""
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for topic, key, value, _p in outputs:
        if key and key.startswith(FORWARD_PREFIX):
            envelope = orjson.loads(value or b"")
            records.append((envelope["to"], envelope["key"].encode(), envelope["value"].encode()))
        else:
            records.append((topic, key, value))
    return records
