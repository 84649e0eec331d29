"""Raw records → Kafka, in order, losing nothing: a bounded buffer in front of an idempotent producer.

Records are handed to aiokafka in arrival order and removed from the buffer only once Kafka
acknowledged them. If a produce fails for good (the producer gave up after
`produce_timeout_ms`, e.g. a long broker outage) every unacknowledged record is put back at
the front of the buffer and re-sent, in order, by a fresh producer: at-least-once, never a
hole (a re-sent record may duplicate one that was in fact written; readers see the same
connection id and seq twice and downstream de-duplicates on the natural key).
When the buffer holds `max_buffer` records, `publish` waits: the connector stops reading its
socket (backpressure) instead of dropping anything.

Latency: aiokafka keeps one produce request in flight per broker. The batch handed to it for a
partition stays open until its sender takes it, and new records are appended to that batch
right away (no hop through the publisher task), so a record waits at most for the request in
flight and then its own: everything that arrived meanwhile goes in one request. The producer
runs with linger 0 (PRODUCER_DEFAULTS otherwise): an open batch is sent as soon as the broker
connection is free, never held back for more records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from services.common.kafka import PRODUCER_DEFAULTS, start_producer
from services.common.raw import (
    HEADER_CONNECTION_ID,
    HEADER_KIND,
    HEADER_RECEIVED_AT,
    HEADER_SEQ,
    KIND_FRAME,
    KIND_MARKER,
)
from services.common.topics import RAW_TOPICS
from services.feed import metrics
from services.feed.records import RawRecord

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 20_000  # records handed to aiokafka and not yet acknowledged
# The raw topics take messages up to 2 MiB (max.message.bytes); a larger record could never be written.
MAX_RECORD_BYTES = 2 * 1024 * 1024 - 64 * 1024
# Records are batched by the publisher itself (see above): aiokafka must not wait for more.
PRODUCER_CONFIG: dict[str, object] = {**PRODUCER_DEFAULTS, "linger_ms": 0}

TopicPartition = tuple[str, int]


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        max_buffer: int = 50_000,
        produce_timeout_ms: int = 120_000,
        observe_latency: bool = True,
        on_ack: Callable[[RawRecord, int], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.max_buffer = max_buffer
        self.produce_timeout_ms = produce_timeout_ms
        self.observe_latency = observe_latency
        self.on_ack = on_ack  # (record, ack time ns): used by the benchmark
        self.acked = 0
        self._pending: deque[RawRecord] = deque()
        self._inflight: deque[tuple[RawRecord, asyncio.Future]] = deque()
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._latency: dict = {}  # exchange → histogram child
        self._partitions: dict[tuple[str, str], TopicPartition] = {}
        # Per partition: the batch last handed to aiokafka and its future; appended to while open.
        self._open: dict[TopicPartition, tuple[BatchBuilder, asyncio.Future]] = {}
        self._key_bytes: dict[str, bytes] = {}  # connection id → its UTF-8 bytes (key and header)

    @property
    def depth(self) -> int:
        return len(self._pending) + len(self._inflight)

    def full(self) -> bool:
        return self.depth >= self.max_buffer

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-publisher")

    async def publish(self, record: RawRecord) -> None:
        """Queue a record; waits (backpressure) while the buffer is full."""
        if len(self._pending) + len(self._inflight) >= self.max_buffer:
            while self.depth >= self.max_buffer:
                self._space.clear()
                await self._space.wait()
        # Straight into its partition's open batch when nothing waits ahead of it (order).
        if self._pending or not self._append_open(record):
            self._pending.append(record)
            if not self._wakeup.is_set():
                self._wakeup.set()

    def _append_open(self, record: RawRecord) -> bool:
        """Append to the open batch of the record's partition; False when there is none (or it is full)."""
        tp = self._partitions.get((record.exchange, record.connection_id))
        if tp is None:
            return False
        entry = self._open.get(tp)
        if entry is None or len(self._inflight) >= MAX_IN_FLIGHT or len(record.value) > MAX_RECORD_BYTES:
            return False
        key = self._key(record.connection_id)
        if (
            entry[0].append(timestamp=None, key=key, value=record.value, headers=_headers(record, key))
            is None
        ):
            del self._open[tp]  # taken by the sender (closed) or full
            return False
        self._inflight.append((record, entry[1]))
        return True

    def _key(self, connection_id: str) -> bytes:
        key = self._key_bytes.get(connection_id)
        if key is None:
            if len(self._key_bytes) > 10_000:  # connection ids change on every reconnect
                self._key_bytes.clear()
            key = self._key_bytes[connection_id] = connection_id.encode()
        return key

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.depth:
            if self._task is not None and self._task.done():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self, timeout: float = 30.0) -> bool:
        """Flush (up to timeout), then close the producer; False when records were left unacknowledged."""
        flushed = await self.flush(timeout)
        if not flushed:
            log.error("stopping with %d raw record(s) not acknowledged by Kafka", self.depth)
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_producer()
        return flushed

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._producer is None:
                    self._producer = await start_producer(
                        bootstrap_servers=self.bootstrap,
                        **PRODUCER_CONFIG,
                        request_timeout_ms=self.produce_timeout_ms,
                    )
                await self._pump(self._producer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # KafkaError, OSError, ... : never lose the publisher task
                metrics.PRODUCE_ERRORS.labels(type(exc).__name__).inc()
                log.warning(
                    "Kafka produce failed (%r); %d record(s) will be re-sent",
                    exc,
                    len(self._inflight),
                    exc_info=not isinstance(exc, KafkaError | OSError),
                )
                self._requeue()
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2

    async def _pump(self, producer: AIOKafkaProducer) -> None:
        pending, inflight = self._pending, self._inflight
        while True:
            self._wakeup.clear()
            if pending and len(inflight) < MAX_IN_FLIGHT:
                await self._send_batches(producer)
            acked = 0
            per_exchange: dict[str, int] = {}
            now_ns = time.time_ns()
            while inflight and inflight[0][1].done():
                record, future = inflight[0]
                future.result()  # raises the produce error: the caller re-sends from here on
                inflight.popleft()
                acked += 1
                per_exchange[record.exchange] = per_exchange.get(record.exchange, 0) + 1
                if self.observe_latency:
                    self._histogram(record.exchange).observe((now_ns - record.received_at_ns) / 1e9)
                if self.on_ack is not None:
                    self.on_ack(record, now_ns)
            if acked:
                self.acked += acked
                for exchange, count in per_exchange.items():
                    metrics.PRODUCED.labels(RAW_TOPICS[exchange]).inc(count)
                metrics.BUFFER_DEPTH.set(self.depth)
                if self.depth < self.max_buffer:
                    self._space.set()
            if not (pending and len(inflight) < MAX_IN_FLIGHT):
                await self._wakeup.wait()

    async def _send_batches(self, producer: AIOKafkaProducer) -> None:
        """Hand pending records (up to the in-flight bound) to aiokafka, in order.

        A record joins its partition's open batch when there is one; otherwise it starts a new
        batch, handed over at once (it goes out as soon as the broker connection is free) and
        left open for the records after it. A record leaves `pending` only once it is in a
        batch aiokafka has accepted, so a failure here loses nothing.
        """
        pending, partitions, inflight = self._pending, self._partitions, self._inflight
        while pending and len(inflight) < MAX_IN_FLIGHT:
            record = pending[0]
            if len(record.value) > MAX_RECORD_BYTES:
                pending.popleft()
                self._too_large(record)
                continue
            tp = partitions.get((record.exchange, record.connection_id))
            if tp is None:
                tp = await self._partition(producer, record)
                if not pending or pending[0] is not record:
                    continue  # re-queued meanwhile: start over from the head
            entry = self._open.get(tp)
            key = self._key(record.connection_id)
            headers = _headers(record, key)
            if (
                entry is not None
                and entry[0].append(timestamp=None, key=key, value=record.value, headers=headers) is not None
            ):
                pending.popleft()
                inflight.append((record, entry[1]))
                continue
            builder = producer.create_batch()
            builder.__class__ = _SealOnDrain  # same object, one method more (see the class)
            builder.append(timestamp=None, key=key, value=record.value, headers=headers)
            # Waits only while an earlier, full batch of this partition is not yet taken by the sender.
            future = await producer.send_batch(builder, tp[0], partition=tp[1])
            future.add_done_callback(self._on_done)
            self._open[tp] = (builder, future)
            if pending and pending[0] is record:
                pending.popleft()
            inflight.append((record, future))

    async def _partition(self, producer: AIOKafkaProducer, record: RawRecord) -> TopicPartition:
        """The partition producer.send() would pick for the key (murmur2), cached per key."""
        cache_key = (record.exchange, record.connection_id)
        tp = self._partitions.get(cache_key)
        if tp is None:
            await producer.client._wait_on_metadata(record.topic)
            partition = producer._partition(record.topic, None, None, None, record.key, None)
            tp = self._partitions[cache_key] = (record.topic, partition)
        return tp

    def _too_large(self, record: RawRecord) -> None:
        # Cannot ever be written (the feed filters > 1 MiB; a hand-made capture may not).
        metrics.OVERSIZED.labels(record.exchange).inc()
        log.error(
            "record of %d bytes (%s seq %d) is too large for a Kafka batch: not published",
            len(record.value),
            record.connection_id,
            record.seq,
        )

    def _histogram(self, exchange: str):
        child = self._latency.get(exchange)
        if child is None:
            child = self._latency[exchange] = metrics.PRODUCE_LATENCY.labels(exchange)
        return child

    def _on_done(self, future: asyncio.Future) -> None:
        self._wakeup.set()

    def _requeue(self) -> None:
        """Put every unacknowledged record back in front of the queue, in order."""
        for record, future in reversed(self._inflight):
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: no "exception never retrieved" warning
            self._pending.appendleft(record)
        self._inflight.clear()
        metrics.BUFFER_DEPTH.set(self.depth)

    async def _close_producer(self) -> None:
        self._partitions.clear()
        self._open.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(producer.stop(), 5.0)


class _SealOnDrain(BatchBuilder):
    """A batch that takes appends after it was handed to aiokafka, until the sender takes it.

    When aiokafka's sender takes a batch (MessageAccumulator._pop_batch) it fixes the batch's
    idempotence sequence range from record_count() and builds the bytes only later, in the
    request task: a record appended in between would fall outside that range and the broker
    would answer OutOfOrderSequenceNumber. Closing the builder on that very call makes later
    appends return None, so the next record starts a new batch. (Closing early, should aiokafka
    ever ask sooner, only makes batches smaller.)
    """

    def record_count(self) -> int:
        self.close()
        return super().record_count()


def _headers(record: RawRecord, key: bytes) -> list[tuple[str, bytes]]:
    """record.headers() with the connection id's bytes reused (this runs once per frame)."""
    return [
        (HEADER_RECEIVED_AT, b"%d" % record.received_at_ns),
        (HEADER_CONNECTION_ID, key),
        (HEADER_SEQ, b"%d" % record.seq),
        (HEADER_KIND, _KIND_BYTES.get(record.kind) or record.kind.encode()),
    ]


_KIND_BYTES = {KIND_FRAME: KIND_FRAME.encode(), KIND_MARKER: KIND_MARKER.encode()}
