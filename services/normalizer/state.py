"""Dedup state per parsed partition, recovered from its own changelog topic with read_committed.

The changelog (`<app id>-dedup-changelog`, compacted, co-partitioned with
market.crypto.trades.parsed) is written in the same transaction as the published trades, so a
recovered state is exactly the state behind what downstream can read. (A Faust Table cannot give
this: its changelog is written outside our transaction and recovered read_uncommitted, which
would mark trades of an aborted batch as seen and lose them.)
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.kafka import ensure_topics
from services.common.topics import TRADE_PARTITIONS, TopicSpec
from services.normalizer.dedup import SymbolState, new_state

log = logging.getLogger(__name__)


def changelog_spec(app_id: str) -> TopicSpec:
    return TopicSpec(
        name=f"{app_id}-dedup-changelog",
        partitions=TRADE_PARTITIONS,
        key="<exchange>:<symbol>",
        value="dedup state (dedup.SymbolState JSON)",
        cleanup_policy="compact",
    )


class DedupStore:
    def __init__(self, bootstrap: str, app_id: str, horizon: int) -> None:
        self.bootstrap = bootstrap
        self.spec = changelog_spec(app_id)
        self.topic = self.spec.name
        self.horizon = horizon
        self._partitions: dict[int, dict[str, SymbolState]] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, [self.spec])
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def drop(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    async def partition(self, partition: int) -> dict[str, SymbolState]:
        states = self._partitions.get(partition)
        if states is None:
            states = self._partitions[partition] = await self._recover(partition)
        return states

    def state(self, states: dict[str, SymbolState], key: str, exchange: str) -> SymbolState:
        state = states.get(key)
        if state is None:
            state = states[key] = new_state(exchange, self.horizon)
        return state

    async def _recover(self, partition: int) -> dict[str, SymbolState]:
        """Read the changelog partition up to its last stable offset (committed data only)."""
        assert self._consumer is not None
        started = time.monotonic()
        tp = TopicPartition(self.topic, partition)
        self._consumer.assign([tp])
        end = (await self._consumer.end_offsets([tp]))[tp]
        states: dict[str, SymbolState] = {}
        if end > 0:
            await self._consumer.seek_to_beginning(tp)
            while await self._consumer.position(tp) < end:
                batch = await self._consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, ()):
                    if record.key is None or record.value is None:
                        continue
                    key = record.key.decode()
                    states[key] = SymbolState.decode(
                        record.value, self.horizon, new_state(key.split(":", 1)[0], 1).sequential
                    )
        log.info(
            "dedup state of parsed partition %d: %d symbols recovered in %.2fs",
            partition,
            len(states),
            time.monotonic() - started,
        )
        return states
