"""The Faust app: consumes market.crypto.trades in batches, keeps candle state in a changelog-backed
Table, publishes live updates and final candles.

Delivery guarantee (why not Faust's exactly_once): faust-streaming 0.15.3 runs one transactional
producer per partition and its commit path logs and swallows a failed `commit_transaction`, so a failed
commit does not stop the offsets from moving on — atomicity is not guaranteed. The app therefore runs
at_least_once and makes every step idempotent instead:
- each candle stores the highest source offset applied to it: a re-delivered trade is skipped;
- a batch's state is written to the changelog before its offsets are acknowledged, and Faust flushes
  the producer before it commits offsets, so committed offsets never run ahead of the state;
- a final candle is written to market.crypto.ohlcv and acknowledged by the broker *before* the state
  that marks it published, so a crash in between re-publishes the same revision with the same content
  (the topic is compacted by candle key: identical duplicates are harmless) and never loses one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from services.common.kafka import PRODUCER_DEFAULTS
from services.common.schemas import SchemaError, Trade
from services.common.topics import OHLCV, OHLCV_LIVE, TRADE_PARTITIONS, TRADES
from services.ohlcv import metrics
from services.ohlcv.candles import CandleState
from services.ohlcv.engine import EngineConfig, PartitionState
from services.ohlcv.settings import OhlcvSettings

log = logging.getLogger(__name__)

STATE_TABLE = "candles"


def _read_committed() -> None:
    """Faust reads read_committed only under exactly_once: make its worker consumer always do so."""
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_k2_read_committed", False):
        return
    original = thread_cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start() for its fetcher
        return consumer

    thread_cls._create_worker_consumer = create  # type: ignore[method-assign]
    thread_cls._k2_read_committed = True  # type: ignore[attr-defined]


class Runtime:
    """Per-worker state: one PartitionState per assigned partition, the output producer."""

    def __init__(self, app: faust.App, settings: OhlcvSettings, table: Any) -> None:
        self.app = app
        self.settings = settings
        self.table = table
        self.config = EngineConfig(
            grace_us=int(settings.ohlcv_grace_seconds * 1_000_000),
            idle_timeout=settings.ohlcv_idle_timeout_seconds,
            horizon_us=int(settings.ohlcv_correction_horizon_seconds * 1_000_000),
            live_interval=settings.ohlcv_live_interval_ms / 1000,
        )
        self.grace_s = settings.ohlcv_grace_seconds
        self.partitions: dict[int, PartitionState] = {}
        self.producer: AIOKafkaProducer | None = None
        self._publish_lock = asyncio.Lock()
        self.send_error: BaseException | None = None
        self.closed = False
        self.changelog_topic = table.changelog_topic.get_topic_name()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id=f"{self.settings.ohlcv_app_id}-out",
                **PRODUCER_DEFAULTS,
            )
            await producer.start()
            self.producer = producer
        return self.producer

    async def stop(self) -> None:
        """After the consumer's last commit: write what is left, then close (later flushes are no-ops)."""
        await self.flush_state()
        self.closed = True
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == TRADES}

    def load_assigned(self) -> None:
        """After table recovery: build the in-memory state of every newly assigned partition."""
        now = time.monotonic()
        for partition in sorted(self.assigned() - set(self.partitions)):
            state = PartitionState(partition, self.config, now)
            prefix = f"{partition}|".encode()
            state.load(
                (key[len(prefix) :].decode(), value)
                for key, value in list(self.table.data.items())
                if key.startswith(prefix)
            )
            self.partitions[partition] = state
            log.info(
                "partition %d: %d candles loaded, watermark %s",
                partition,
                len(state.candles),
                state.watermark,
            )

    def revoke(self, partitions: set[int]) -> None:
        """Forget revoked partitions (the changelog is their truth; recovery reloads them if they return)."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            prefix = f"{partition}|".encode()
            for key in [k for k in self.table.data if k.startswith(prefix)]:
                self.table.data.pop(key, None)

    # -- trades --------------------------------------------------------------------------------
    def apply_batch(self, events: list[Any]) -> None:
        now = time.monotonic()
        assigned = self.assigned()
        skipped_dup = invalid = 0
        for event in events:
            message = event.message
            partition = message.partition
            if partition not in assigned:
                continue  # revoked while buffered: its new owner processes it
            state = self.partitions.get(partition)
            if state is None:
                self.load_assigned()
                state = self.partitions[partition]
            try:
                trade = Trade.decode(event.value)
            except SchemaError as exc:
                invalid += 1
                log.warning(
                    "partition %d offset %d: undecodable trade skipped: %s", partition, message.offset, exc
                )
                continue
            if not state.apply(trade, message.offset, now):
                skipped_dup += 1
        metrics.TRADES_IN.inc(len(events))
        if skipped_dup:
            metrics.TRADES_SKIPPED.labels("duplicate").inc(skipped_dup)
        if invalid:
            metrics.TRADES_SKIPPED.labels("invalid").inc(invalid)

    async def persist(self, states: list[PartitionState]) -> None:
        """Write the partitions' owed state to the table and (queued) to its changelog.

        The changelog records go through our own producer (Faust's send_soon buffer drains one record
        at a time, far too slowly for a batch's state) to the changelog partition = the source
        partition, which is where Faust's table recovery reads them back. `flush_state` — hooked into
        the flush Faust performs before every offset commit and on revocation — calls this and waits
        for the acknowledgements, so committed offsets never run ahead of the state.
        """
        producer = await self.start_producer()
        topic = self.changelog_topic
        data = self.table.data
        for state in states:
            if self.partitions.get(state.partition) is not state:
                continue  # revoked meanwhile: its state belongs to the new owner
            prefix = f"{state.partition}|"
            for key, value in state.drain_persist():
                table_key = (prefix + key).encode()
                if value is None:
                    data.pop(table_key, None)
                else:
                    data[table_key] = value
                future = await producer.send(topic, value, key=table_key, partition=state.partition)
                future.add_done_callback(self._check_sent)

    def _check_sent(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None and self.send_error is None:
            self.send_error = future.exception()

    async def flush_state(self) -> None:
        """Write every partition's owed state and wait until it is acknowledged (before a commit).

        State is written here only — once per commit interval, not per batch — so a candle that
        changes a thousand times between two commits costs one changelog record.
        """
        if self.closed:
            return
        await self.persist(list(self.partitions.values()))
        if self.producer is not None:
            await self.producer.flush()
        if self.send_error is not None:
            log.critical(
                "a state record could not be written: %r; stopping without committing", self.send_error
            )
            os._exit(70)  # a crash: the next owner resumes from the last committed offsets

    # -- outputs -------------------------------------------------------------------------------
    async def publish_live(self, force: bool = False) -> None:
        producer = await self.start_producer()
        now = time.monotonic()
        for state in list(self.partitions.values()):
            for candle in state.live_due(now, force):
                snapshot = candle.to_candle(-1)
                await producer.send(OHLCV_LIVE, snapshot.encode(), key=snapshot.live_key.encode())
                metrics.CANDLES_OUT.labels(candle.timeframe, "live").inc()

    async def tick(self) -> None:
        """Idle watermarks, closes, finals, purges, live updates; runs every few tens of ms."""
        now_us = time.time_ns() // 1000
        now = time.monotonic()
        for state in list(self.partitions.values()):
            state.advance_idle(now_us, now)
            state.close_due()
            if state.watermark is not None:
                metrics.WATERMARK_LAG.labels(str(state.partition)).set(
                    max(0.0, (now_us - state.watermark) / 1e6)
                )
        await self.publish_finals()
        for state in list(self.partitions.values()):
            state.purge()
        await self.publish_live()

    async def publish_finals(self) -> None:
        async with self._publish_lock:
            producer = await self.start_producer()
            sent: list[tuple[PartitionState, CandleState, int, int, asyncio.Future[Any]]] = []
            for state in list(self.partitions.values()):
                for candle, revision, version in state.finals_due():
                    record = candle.to_candle(revision)
                    future = await producer.send(OHLCV, record.encode(), key=record.key.encode())
                    sent.append((state, candle, revision, version, future))
            if not sent:
                return
            await asyncio.gather(*(item[4] for item in sent))  # acknowledged before the state says so
            now_s = time.time()
            for state, candle, revision, version, _ in sent:
                state.mark_published(candle, revision, version)
                kind = "final" if revision == 0 else "revision"
                metrics.CANDLES_OUT.labels(candle.timeframe, kind).inc()
                if revision == 0:
                    metrics.CLOSE_LATENCY.labels(candle.timeframe).observe(
                        max(0.0, now_s - candle.end / 1e6 - self.grace_s)
                    )

    def update_gauges(self) -> None:
        open_total = closed_total = 0
        consumer = self.app.consumer
        for state in self.partitions.values():
            opened, closed = state.counts()
            open_total += opened
            closed_total += closed
            try:
                highwater = consumer.highwater(TP(TRADES, state.partition))
            except Exception:
                continue
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(str(state.partition)).set(
                    max(0, highwater - state.last_offset - 1)
                )
        metrics.OPEN_CANDLES.labels("open").set(open_total)
        metrics.OPEN_CANDLES.labels("closed").set(closed_total)


def create_app(settings: OhlcvSettings) -> tuple[faust.App, Runtime]:
    _read_committed()
    worker = settings.ohlcv_worker_name or f"{socket.gethostname()}-{os.getpid()}"
    datadir = Path(settings.resolved_data_dir) / "ohlcv" / settings.ohlcv_app_id / worker
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.ohlcv_app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=TRADE_PARTITIONS,
        processing_guarantee="at_least_once",
        broker_commit_interval=settings.ohlcv_commit_interval_seconds,
        broker_commit_every=1_000_000,
        broker_session_timeout=settings.ohlcv_session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.ohlcv_session_timeout_seconds / 3),
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        stream_buffer_maxsize=max(4096, settings.ohlcv_batch_max * 2),
        broker_max_poll_records=max(500, settings.ohlcv_batch_max),
        producer_acks=-1,
        producer_linger_ms=5,
        producer_compression_type="lz4",
    )
    source = app.topic(TRADES, key_serializer="raw", value_serializer="raw")
    table = app.Table(
        STATE_TABLE, default=None, partitions=TRADE_PARTITIONS, key_type=bytes, value_type=bytes
    )
    runtime = Runtime(app, settings, table)
    batch_max = settings.ohlcv_batch_max
    within = settings.ohlcv_batch_within_ms / 1000
    tick_s = min(0.05, settings.ohlcv_live_interval_ms / 1000 / 10)

    @app.agent(source)
    async def candles(stream: Any) -> None:
        async for events in stream.take_events(batch_max, within):
            started = time.perf_counter()
            runtime.apply_batch(events)  # its state is written by the flush before the next commit
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            await runtime.publish_live()

    @app.task
    async def ticker() -> None:
        last_gauges = 0.0
        while not app.should_stop and not runtime.closed:
            await asyncio.sleep(tick_s)
            if app.rebalancing or not runtime.partitions or runtime.closed:
                continue
            try:
                await runtime.tick()
            except Exception:
                log.exception("tick failed; retrying")
            if time.monotonic() - last_gauges > 1.0:
                last_gauges = time.monotonic()
                runtime.update_gauges()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        runtime.revoke({tp.partition for tp in revoked if tp.topic == TRADES})

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(sender: Any, **_: Any) -> None:
        runtime.load_assigned()

    faust_producer = app.producer
    faust_flush = faust_producer.flush

    async def flush_with_state() -> None:
        """Faust flushes its producer before it commits offsets (and on revocation): flush ours too."""
        await faust_flush()
        await runtime.flush_state()

    faust_producer.flush = flush_with_state  # type: ignore[method-assign]

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **_: Any) -> None:
        await runtime.stop()

    return app, runtime
