"""The lake writer process: consume the topics, buffer per table, commit batches exactly once.

Offsets live in the tables (offsets.py), not in the consumer group: on every partition assignment
the writer reads each target table's recorded offset for the partition and seeks there; records
below a table's offset are skipped for that table. The group is used for partition assignment
(replicas share the partitions) and, after each Iceberg commit, for the usual lag tooling only.
All Iceberg work runs in one worker thread; while a batch commits, the next one fills (one in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.common.catalog import open_catalog
from services.common.kafka import ensure_topics, paused, wait_for_broker
from services.common.logs import dump_tasks_on_sigusr1
from services.common.topics import TOPICS_BY_NAME
from services.lakewriter import metrics
from services.lakewriter.faults import Faults
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.offsets import TP
from services.lakewriter.routes import Route, dedupe_candles, routes
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import Batch, CommitResult, LakeWriter

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, service: LakewriterService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.on_assigned({(tp.topic, tp.partition) for tp in assigned})


class LakewriterService:
    def __init__(self, settings: LakewriterSettings | None = None) -> None:
        self.settings = settings or LakewriterSettings()
        self.routes: dict[str, Route] = routes(self.settings.lakewriter_topics)
        self.writer_id = f"{socket.gethostname()}:{os.getpid()}"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iceberg")
        self.writer = LakeWriter(
            open_catalog(self.settings),
            writer_id=self.writer_id,
            retries=self.settings.lakewriter_commit_retries,
            target_file_bytes=self.settings.lakewriter_target_file_mb * 1024 * 1024,
            faults=Faults(self.settings.lakewriter_fault),
        )
        self.faults = self.writer.faults
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned: set[TP] = set()
        # What each table records for each partition (None: nothing yet), as this writer knows it.
        self.expected: dict[str, dict[TP, int | None]] = defaultdict(dict)
        self.seen: dict[TP, int] = {}  # next offset after the last record routed, per partition
        self.buffers: dict[str, dict[TP, list[tuple[int, dict[str, Any]]]]] = defaultdict(dict)
        self.chunks: dict[str, dict[TP, list[pa.Table]]] = defaultdict(dict)  # block-decoded rows
        self.buffered_rows = 0
        self.batch_started: float | None = None
        self.last_commit: dict[str, float] = {}
        self.flushing: asyncio.Task[list[CommitResult]] | None = None
        self.reseek: set[TP] = set()
        self.stopping = asyncio.Event()
        self.lock = asyncio.Lock()

    async def _iceberg(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- partitions ---------------------------------------------------------------------------------

    async def on_assigned(self, tps: set[TP]) -> None:
        assert self.consumer is not None
        # held back from the first line: `route` drops records of partitions not yet in `assigned`
        with paused(self.consumer, (TopicPartition(*tp) for tp in tps)):
            async with self.lock:
                await self._resume(tps)
                self.assigned |= tps
                metrics.ASSIGNED.set(len(self.assigned))
                log.info("assigned %d partition(s): %s", len(tps), sorted(tps))

    async def on_revoked(self, tps: set[TP]) -> None:
        async with self.lock:
            with contextlib.suppress(Exception):
                await self._flush_locked(force=True)
                await self._drain()
            for tp in tps:
                self._forget(tp)
            self.assigned -= tps
            metrics.ASSIGNED.set(len(self.assigned))
            log.info("revoked %d partition(s)", len(tps))

    def _forget(self, tp: TP) -> None:
        for table, parts in self.buffers.items():
            dropped = parts.pop(tp, None)
            if dropped:
                self.buffered_rows -= len(dropped)
            self.expected[table].pop(tp, None)
        for parts in self.chunks.values():
            self.buffered_rows -= sum(chunk.num_rows for chunk in parts.pop(tp, ()))
        self.seen.pop(tp, None)

    async def _resume(self, tps: set[TP]) -> None:
        """Seek each partition to the lowest offset its tables record (the table is the truth)."""
        assert self.consumer is not None
        tables = sorted({t for topic, _ in tps for t in self.routes[topic].tables})
        recorded = {t: await self._iceberg(self.writer.offsets, t) for t in tables}
        from_start = []
        for tp in sorted(tps):
            self._forget(tp)
            starts = []
            for table in self.routes[tp[0]].tables:
                self.expected[table][tp] = recorded[table].get(tp)
                starts.append(recorded[table].get(tp))
            if any(s is None for s in starts):
                from_start.append(TopicPartition(*tp))
            else:
                start = min(s for s in starts if s is not None)
                self.consumer.seek(TopicPartition(*tp), start)
                self.seen[tp] = start
                log.info("%s:%d: resuming at offset %d (from the table)", tp[0], tp[1], start)
        if from_start:
            await self.consumer.seek_to_beginning(*from_start)
            log.info(
                "no offset in the table(s) for %s: starting at the beginning",
                ", ".join(f"{tp.topic}:{tp.partition}" for tp in from_start),
            )

    # -- consuming ----------------------------------------------------------------------------------

    def route(self, record: Any) -> None:
        tp = (record.topic, record.partition)
        if tp not in self.assigned or tp in self.reseek:
            return
        route = self.routes[record.topic]
        self.seen[tp] = record.offset + 1
        try:
            table, row = route.decode(record)
        except (ValueError, TypeError, KeyError) as exc:
            metrics.REJECTED.labels(record.topic, "undecodable").inc()
            log.warning(
                "%s:%d@%d not decodable, skipped: %s", record.topic, record.partition, record.offset, exc
            )
            return
        expected = self.expected[table].get(tp)
        if expected is not None and record.offset < expected:
            return  # already in this table (another table of the topic was behind)
        self.buffers[table].setdefault(tp, []).append((record.offset, row))
        self.buffered_rows += 1
        if self.batch_started is None:
            self.batch_started = time.monotonic()

    def route_block(self, records: list[Any]) -> None:
        """Records of ONE partition, in offset order (as getmany returns them).

        A route with a block decoder (silver) turns them into one Arrow table in C++; if some record
        needs the per-record decoder, the block is split in halves so only the small part around the
        odd record goes record by record (where bad records are rejected and counted)."""
        if not records:
            return
        first = records[0]
        tp = (first.topic, first.partition)
        route = self.routes.get(first.topic)
        if route is None or route.decode_block is None or tp not in self.assigned or tp in self.reseek:
            for record in records:
                self.route(record)
            return
        (table,) = route.tables
        expected = self.expected[table].get(tp)
        if expected is not None and first.offset < expected:  # already in the table
            self.seen[tp] = records[-1].offset + 1
            records = [record for record in records if record.offset >= expected]
        self._route_block(route, table, tp, records)

    def _route_block(self, route: Route, table: str, tp: TP, records: list[Any]) -> None:
        if not records:
            return
        assert route.decode_block is not None
        data = route.decode_block([record.value for record in records])
        if data is None:
            if len(records) <= 8:
                for record in records:
                    self.route(record)
                return
            middle = len(records) // 2
            self._route_block(route, table, tp, records[:middle])
            self._route_block(route, table, tp, records[middle:])
            return
        self.seen[tp] = records[-1].offset + 1
        self.chunks[table].setdefault(tp, []).append(data)
        self.buffered_rows += data.num_rows
        if self.batch_started is None:
            self.batch_started = time.monotonic()

    def _due(self) -> bool:
        if self.buffered_rows >= self.settings.lakewriter_batch_rows:
            return True
        if (
            self.batch_started is not None
            and time.monotonic() - self.batch_started >= self.settings.lakewriter_batch_seconds
        ):
            return True
        now = time.monotonic()
        return any(
            now - self.last_commit.get(t, now) >= self.settings.lakewriter_idle_commit_seconds
            and self._idle_advance(t)
            for r in self.routes.values()
            for t in r.tables
        )

    def _idle_advance(self, table: str) -> dict[TP, int]:
        topic_tables = {t: r for r in self.routes.values() for t in r.tables}
        topic = topic_tables[table].topic
        out = {}
        for tp in self.assigned:
            if tp[0] != topic or tp not in self.seen:
                continue
            expected = self.expected[table].get(tp)
            if expected is None or self.seen[tp] > expected:
                out[tp] = self.seen[tp]
        return out

    def _take_batches(self, force: bool) -> list[Batch]:
        now = time.monotonic()
        batches = []
        for route in self.routes.values():
            for table in route.tables:
                parts = self.buffers.get(table, {})
                chunks = self.chunks.get(table, {})
                idle = (
                    force
                    or now - self.last_commit.setdefault(table, now)
                    >= self.settings.lakewriter_idle_commit_seconds
                )
                end = {tp: self.seen[tp] for tp in (*parts, *chunks) if tp in self.seen}
                if idle:
                    end.update(self._idle_advance(table))
                if not end:
                    continue
                rows = {
                    tp: dedupe_candles(part) if route.upsert else [row for _, row in part]
                    for tp, part in parts.items()
                }
                expected = {tp: self.expected[table].get(tp) for tp in end}
                batches.append(Batch(table, rows=rows, end=end, expected=expected, chunks=dict(chunks)))
                for tp, offset in end.items():  # optimistic: the next batch continues from here
                    self.expected[table][tp] = offset
                self.buffers[table] = {}
                self.chunks[table] = {}
        self.buffered_rows = 0
        self.batch_started = None
        return batches

    # -- committing ---------------------------------------------------------------------------------

    async def _flush_locked(self, force: bool = False) -> None:
        await self._drain()
        batches = self._take_batches(force)
        if batches:
            self.flushing = asyncio.ensure_future(self._iceberg(self._commit_all, batches))

    def _commit_all(self, batches: list[Batch]) -> list[CommitResult]:
        return [self.writer.commit(batch) for batch in batches]

    async def _drain(self) -> None:
        """Wait for the commit in flight; handle fenced partitions; commit Kafka offsets (best effort)."""
        task, self.flushing = self.flushing, None
        if task is None:
            return
        results = await task  # any error other than a handled conflict ends the process (restart resumes)
        now = time.monotonic()
        for result in results:
            self.last_commit[result.table] = now
            log.debug(
                "committed %s: %d row(s), %d file(s), %.3fs, %d attempt(s), offsets %s",
                result.table,
                result.rows,
                result.files,
                result.seconds,
                result.attempts,
                result.offsets,
            )
            self.reseek |= {tp for tp in result.fenced if tp in self.assigned}
        await self._commit_kafka()
        self.faults.point("after_kafka_commit")

    async def _commit_kafka(self) -> None:
        assert self.consumer is not None
        offsets = {}
        for tp in self.assigned:
            values = [self.expected[t].get(tp) for t in self.routes[tp[0]].tables]
            if values and all(v is not None for v in values):
                offset = min(values)
                if offset == self.seen.get(tp):
                    # all it handed over is in the tables: whatever the consumer skipped beyond
                    # (transaction markers, aborted records) is done too, or the group lags forever
                    offset = max(offset, await self._position(tp))
                offsets[TopicPartition(*tp)] = OffsetAndMetadata(offset, "")  # type: ignore[type-var]
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # informational only: the tables hold the real offsets
                log.debug("kafka offset commit failed: %s", exc)

    async def _position(self, tp: TP) -> int:
        assert self.consumer is not None
        try:
            return await asyncio.wait_for(self.consumer.position(TopicPartition(*tp)), 1.0)
        except Exception:  # revoked or being reset: no opinion
            return -1

    async def _handle_reseek(self) -> None:
        if not self.reseek:
            return
        # Called from the main loop, so no getmany runs until the partitions are sought again.
        async with self.lock:
            await self._drain()
            tps, self.reseek = self.reseek & self.assigned, set()
            if tps:
                log.warning("re-reading %d partition(s) from the tables' offsets: %s", len(tps), sorted(tps))
                await self._resume(tps)

    # -- main loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        await wait_for_broker(settings.kafka_bootstrap)
        await ensure_topics(settings.kafka_bootstrap, [TOPICS_BY_NAME[t] for t in self.routes])
        await self._iceberg(self.writer.ensure_tables, [t for r in self.routes.values() for t in r.tables])
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.lakewriter_group_id,
            group_instance_id=settings.lakewriter_instance_id or None,
            client_id=f"k2-lakewriter-{os.getpid()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.lakewriter_session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.lakewriter_session_timeout_ms // 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await self.consumer.start()
        self.consumer.subscribe(list(self.routes), listener=_Listener(self))
        maintainer = Maintainer(self.writer, settings)
        next_maintenance = time.monotonic() + settings.lakewriter_maintain_interval_seconds
        next_settle = 0.0
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=200, max_records=max(1, min(50_000, settings.lakewriter_batch_rows))
                )
                for records in batch.values():
                    self.route_block(records)
                await self._handle_reseek()
                if self._due() or (
                    not batch  # the input paused (or a backlog is drained): waiting only adds latency
                    and 0 < settings.lakewriter_flush_idle_rows <= self.buffered_rows
                ):
                    async with self.lock:
                        await self._flush_locked()
                elif self.flushing is not None and self.flushing.done():
                    # A finished commit is settled at once (fencing, Kafka offsets, freshness gauges),
                    # not only when the next batch is due, which can be long at low rates.
                    async with self.lock:
                        await self._drain()
                elif not batch and self.flushing is None and time.monotonic() >= next_settle:
                    # idle: a transaction's final marker arrives after its records were committed
                    next_settle = time.monotonic() + 2.0
                    async with self.lock:
                        await self._commit_kafka()
                self._update_gauges()
                if settings.lakewriter_maintain_interval_seconds > 0 and time.monotonic() >= next_maintenance:
                    async with self.lock:
                        await self._drain()
                        report = await self._iceberg(maintainer.run)
                        log.info("maintenance: %s", report.summary())
                    next_maintenance = time.monotonic() + settings.lakewriter_maintain_interval_seconds
            async with self.lock:
                await self._flush_locked(force=True)
                await self._drain()
        finally:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.executor.shutdown(wait=True)

    def _update_gauges(self) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        for table, at in self.last_commit.items():
            metrics.LAST_COMMIT_AGE.labels(table).set(now - at)
        for tp in self.assigned:
            end = self.consumer.last_stable_offset(TopicPartition(*tp))
            if end is not None and tp in self.seen:
                metrics.LAG.labels(tp[0], str(tp[1])).set(max(0, end - self.seen[tp]))

    def stop(self) -> None:
        self.stopping.set()


async def serve(settings: LakewriterSettings) -> None:
    service = LakewriterService(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    dump_tasks_on_sigusr1(loop)
    await service.run()
