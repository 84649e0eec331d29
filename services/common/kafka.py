"""Kafka plumbing shared by the services: readiness, idempotent topic creation, client settings.

`python -m services.common.kafka create-topics` (== `task topics`) creates every topic of the
registry that does not exist yet and reports the ones whose partition count differs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import DefaultPartitioner, murmur2

from services.common.settings import K2Settings
from services.common.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)


class KeyHashCache:
    """aiokafka's DefaultPartitioner (Kafka's murmur2 of the key) with each key's hash remembered.

    aiokafka computes murmur2 in pure Python on every keyed send: ~9 % of the normalizer's CPU. Our
    keys repeat (a few hundred `<exchange>:<symbol>`, connection ids), so the cache is tiny; it is
    cleared whenever it reaches `size` keys, to stay bounded whatever the keys.
    """

    def __init__(self, size: int = 65_536) -> None:
        self.size = size
        self._hashes: dict[bytes, int] = {}
        self._unkeyed = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._unkeyed(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.size:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


@contextlib.contextmanager
def paused(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> Iterator[None]:
    """No records of `partitions` from getmany inside the block.

    aiokafka sets a new assignment before it calls the rebalance listener, so getmany can hand over
    records of a partition the listener is still taking over (seeking, loading state): a consumer
    that skips them loses them, as its position has moved past. Records fetched while paused are
    discarded by aiokafka and fetched again; offset resets still run. Partitions revoked meanwhile
    are left alone."""
    held = [tp for tp in partitions if tp in consumer.assignment()]
    consumer.pause(*held)
    try:
        yield
    finally:
        current = consumer.assignment()
        consumer.resume(*(tp for tp in held if tp in current))


# Producer settings every service uses: no loss (acks=all, idempotent), batched, compressed.
PRODUCER_DEFAULTS: dict[str, object] = {
    "acks": "all",
    "enable_idempotence": True,
    # zstd, not lz4: aiokafka 0.14 compresses lz4 at level 9 (LZ4 HC, ~190 MB/s here: 7 % of the
    # normalizer's CPU in a backlog drain), while zstd's level 3 compresses trade JSON ~8x faster,
    # decompresses ~4x faster and ~1.7x smaller (measured with aiokafka.codec on 256 KiB of Trade JSON)
    "compression_type": "zstd",
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "partitioner": KeyHashCache(),
}


async def start_producer(**options: object) -> AIOKafkaProducer:
    """A started AIOKafkaProducer; if starting fails it is stopped (aiokafka would leave its
    connections and tasks behind) and the error raised."""
    producer = AIOKafkaProducer(**options)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


async def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Return once the broker answers a metadata request; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    aiokafka_log = logging.getLogger("aiokafka")
    previous_level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # "Unable connect" on every try is expected while it starts
    try:
        await _wait_loop(bootstrap, deadline)
    finally:
        aiokafka_log.setLevel(previous_level)


async def _wait_loop(bootstrap: str, deadline: float) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.25)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer in time: {last_error!r}")


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec] = TOPICS) -> list[str]:
    """Create the missing topics with their declared partitions and configs; return the created names."""
    specs = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.configs()) for spec in missing]
            )
            # create_topics reports per-topic errors in the response instead of raising.
            for topic, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(topic)
                elif code != TopicAlreadyExistsError.errno:
                    message = rest[0] if rest else ""
                    raise for_code(code)(f"creating topic {topic} failed: {message}")
        # Only pre-existing topics are checked: fresh ones may not show their partitions yet.
        old = [spec for spec in specs if spec.name in existing]
        described = await admin.describe_topics([spec.name for spec in old]) if old else []
        by_name = {item["topic"]: len(item["partitions"]) for item in described}
        for spec in old:
            if by_name.get(spec.name, spec.partitions) != spec.partitions:
                log.warning(
                    "topic %s has %d partitions, the registry says %d",
                    spec.name,
                    by_name[spec.name],
                    spec.partitions,
                )
        return created
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.kafka")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create-topics", help="create every registry topic that does not exist")
    wait = sub.add_parser("wait", help="wait until the broker answers")
    wait.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    settings = K2Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "wait":
            asyncio.run(wait_for_broker(settings.kafka_bootstrap, args.timeout))
        else:
            asyncio.run(wait_for_broker(settings.kafka_bootstrap, 30.0))
            created = asyncio.run(ensure_topics(settings.kafka_bootstrap))
            print(
                f"created {len(created)} topic(s): {', '.join(created) or '-'}; {len(TOPICS)} in the registry"
            )
    except (TimeoutError, KafkaConnectionError) as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
