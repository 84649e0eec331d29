"""One Kafka transaction per batch: outputs + consumed offsets commit atomically (exactly once).

Why not Faust's processing_guarantee="exactly_once": faust-streaming 0.15.3 picks the transactional
producer of a send from the *destination* partition (`<app>-<group of that topic>-<partition>`),
so output to a topic that is not co-partitioned with the input (raw 3 partitions → parsed 6;
any → gaps 1; any → dlq 3) lands in a transaction that commits other input offsets, or none (it
raises a KeyError for topics the app does not consume), and it logs and swallows commit errors.
Instead each stage owns one transactional aiokafka producer and commits
`send_offsets_to_transaction` with its outputs; Faust's own offset commits are switched off
(app.py), so the transaction is the only thing that moves the group's offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer, TopicPartition

from services.common.kafka import PRODUCER_DEFAULTS

log = logging.getLogger(__name__)

Output = tuple[str, bytes | None, bytes, int | None]  # topic, key, value, partition (None = by key)


class TransactionalSender:
    def __init__(self, bootstrap: str, transactional_id: str, group_id: str, timeout_ms: int) -> None:
        self.group_id = group_id
        self.transactional_id = transactional_id
        self._options = {
            **{k: v for k, v in PRODUCER_DEFAULTS.items() if k != "enable_idempotence"},
            "bootstrap_servers": bootstrap,
            "transactional_id": transactional_id,
            "transaction_timeout_ms": timeout_ms,
        }
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create and start the producer (inside the running loop); fences an older one of the same id."""
        self.producer = AIOKafkaProducer(**self._options)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def commit(self, outputs: Iterable[Output], offsets: dict[TopicPartition, int]) -> None:
        """Send every output and commit the next offsets of the consumed partitions, all or nothing."""
        assert self.producer is not None, "start() first"
        async with self.producer.transaction():
            for topic, key, value, partition in outputs:
                await self.producer.send(topic, value, key=key, partition=partition)
            if offsets:
                await self.producer.send_offsets_to_transaction(offsets, self.group_id)
