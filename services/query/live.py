"""Server-sent events of live candle updates read from market.crypto.ohlcv.live.

Each SSE connection owns an aiokafka consumer (no group, read_committed) assigned to every
partition of the live topic at its end, so a client sees the updates published after it
connected. A `: ready` comment is sent once the consumer's positions are fixed; keep-alive
comments follow when nothing arrives. The consumer stops when the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.schemas import Candle, SchemaError
from services.common.topics import OHLCV_LIVE
from services.query import metrics

log = logging.getLogger(__name__)


async def open_consumer(bootstrap: str, timeout_s: float) -> AIOKafkaConsumer:
    """A consumer at the end of every partition of the live topic; raises if the broker is not reachable."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=10_000,
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        partitions = consumer.partitions_for_topic(OHLCV_LIVE)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(OHLCV_LIVE)
        if not partitions:
            raise LookupError(f"topic {OHLCV_LIVE} does not exist")
        tps = [TopicPartition(OHLCV_LIVE, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            # fix the start now, before telling the client it is live
            await asyncio.wait_for(consumer.position(tp), timeout_s)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def candle_events(
    consumer: AIOKafkaConsumer, timeframe: str, symbol: str, exchange: str | None, heartbeat_s: float
) -> AsyncIterator[bytes]:
    """SSE frames (`event: candle`) for one symbol/timeframe (optionally one exchange)."""
    try:
        yield b": ready\n\n"
        while True:
            batches = await consumer.getmany(timeout_ms=int(heartbeat_s * 1000), max_records=500)
            sent = False
            for records in batches.values():
                for record in records:
                    key = (record.key or b"").decode("utf-8", "replace")
                    ex, _, rest = key.partition(":")
                    sym, _, tf = rest.rpartition(":")
                    if tf != timeframe or sym != symbol or (exchange is not None and ex != exchange):
                        continue
                    try:
                        candle = Candle.decode(record.value or b"")
                    except SchemaError:
                        log.warning(
                            "skipping a malformed live candle at %s:%d", record.partition, record.offset
                        )
                        continue
                    metrics.SSE_CLIENTS.inc()
                    yield (
                        b"event: candle\nid: "
                        + f"{record.partition}-{record.offset}".encode()
                        + b"\ndata: "
                        + candle.encode()
                        + b"\n\n"
                    )
                    sent = True
            if not sent and not batches:
                yield b": keep-alive\n\n"
    finally:
        await consumer.stop()
