"""Exactly-once stream processing: a consumer-group member that handles each input partition's
records in Kafka transactions, with state kept in a compacted changelog topic.

This is Kafka's consume-transform-produce pattern as Kafka Streams ran it before KIP-447:
- one `AIOKafkaConsumer` in the group, read_committed, no auto-commit, batched `getmany`;
- each partition's batch is processed as soon as it is fetched and its outputs queue for the
  worker's next transaction. Transactions go in rounds: one transaction per round holds everything
  every partition queued meanwhile — outputs, state changes (changelog records) and each partition's
  next input offset (a stateful partition writes it to its changelog, key `@position`, next to its
  state; a stateless one uses `send_offsets_to_transaction`): all of it commits or none of it does.
  The changelog way costs a transaction two round trips and one marker fewer; the group's committed
  offset is then only reported, every `plain_commit_seconds`, for lag tools;
- the worker has two transactional producers (`producers`), used in turn: the next transaction is
  sent (and acknowledged) while the one before it commits, and commits only once that one has, so two
  transactions are in flight and they commit in input order; if one fails, the one behind it never
  commits. The queue is bounded by pausing the fetch;
- fencing (Kafka's zombie fencing by transactional id, without KIP-447's group-generation checks,
  which aiokafka does not speak): the producers' ids are those of the worker's *lowest* transactional
  partition, `<group>-<topic>-<partition>` and `….1` (`transactional_ids`). Whoever wrote partition P
  before used the ids of a partition ≤ P, so a new owner of P starts a producer on every such id
  (`init_transactions` bumps the epoch: a paused or partitioned stale owner can no longer commit, and
  its open transaction is aborted) before it reads P's state. A live worker fenced that way in a
  rebalance resets once and goes on;
- on assignment, after fencing, the partition's state and position are read back from its changelog
  partition (read_committed; a stateless partition's position from the group's committed offset), so
  state, position and outputs always describe the same point of the input;
- a failed transaction resets every transactional partition the same way (new producers, state and
  position re-read): what was queued is dropped and processed again from the last committed point,
  its aborted outputs never seen. A processor that raises resets its own partition only.
- optionally, some inputs (`plain_topics`) are processed at least once instead, without
  transactions: for a stage whose every output the next, transactional stage de-duplicates.

Why not Faust for this (faust-streaming 0.15.3, measured on this project): its per-event path capped
the candle service at ~630 trades/s and the normalizer at ~3,300 trades/s on one core; its
`exactly_once` mode picks the transactional producer by *destination* partition (wrong for outputs
that are not co-partitioned with the input) and swallows failed commits; and after a kill -9 its
fetcher could skip a fetched record yet commit past it. The services keep Faust's model — agents per
partition, changelog-backed tables, a worker that scales by joining the group — on aiokafka directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Histogram

from services.common.kafka import PRODUCER_DEFAULTS, ensure_topics, paused, start_producer
from services.common.logs import dump_tasks_on_sigusr1
from services.common.topics import TopicSpec

log = logging.getLogger(__name__)

Output = tuple[str, bytes | None, bytes | None, int | None]
"""One record to publish: topic, key, value (None = tombstone), partition (None = by key)."""

Record = ConsumerRecord

BATCHED_SEND_MIN = 1000
"""A flush or a transaction of at least this many records goes out in record batches
(`_send_batched`); smaller ones (live traffic) one `send()` per record."""

POSITION_KEY = b"@position"
"""Changelog key of a stateful partition's next input offset: it commits in the same transaction as
the state, so the group's committed offset is only reported (for lag tools), never read back."""
"""An input record (aiokafka's ConsumerRecord: topic, partition, offset, key, value, headers, ...)."""


def changelog_spec(name: str, key: str, value: str, partitions: int) -> TopicSpec:
    """A state changelog topic: compacted (the latest value per key is the state), co-partitioned
    with the stateful input topic."""
    return TopicSpec(name=name, partitions=partitions, key=key, value=value, cleanup_policy="compact")


class Processor(Protocol):
    """The logic of one input partition; pure computation, no I/O (the runtime does the I/O)."""

    def process(self, records: list[Record]) -> list[Output]:
        """Outputs (including changelog records) for a batch of this partition's records."""
        ...

    def tick(self) -> list[Output]:
        """Outputs due by the wall clock alone (e.g. windows closed on an idle partition)."""
        ...

    def after_commit(self) -> Callable[[], None] | None:
        """Called right after each process()/tick(): takes what is due once those outputs have
        committed (metrics of what became visible) and returns it as a callable, or None."""
        ...


ProcessorFactory = Callable[[TopicPartition, dict[bytes, bytes]], Processor]
"""Builds a partition's processor from its recovered state (changelog key → latest value)."""


@dataclass(frozen=True, slots=True)
class StreamConfig:
    bootstrap: str
    group_id: str
    topics: tuple[str, ...]
    changelog: TopicSpec | None = None  # state topic, co-partitioned with the stateful inputs
    stateful_topics: frozenset[str] = frozenset()  # inputs whose partition N keeps state in changelog N
    batch_max: int = 2000
    # processed, not yet committed (all partitions; input records + outputs) before fetching waits for
    # the commit round in flight: with at most ~one batch queued behind the round, memory stays near
    # two batches' worth even when one raw frame fans out into hundreds of trades
    queue_max: int = 2000
    # consumer prefetch per partition and per fetch response (aiokafka's response cap; the 4 MiB per
    # partition measured ~10 % more throughput than 1 MiB, same peak RSS: the queue bound is what
    # keeps memory flat)
    partition_fetch_bytes: int = 4 * 1024 * 1024
    fetch_max_bytes: int = 50 * 1024 * 1024
    poll_ms: int = 10
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 15_000
    tick_seconds: float | None = None
    retry_seconds: float = 1.0
    settle_seconds: float = 2.0
    # read_uncommitted only when re-processing an aborted upstream batch's records is harmless
    # (the normalizer's dedup stage: the re-emitted copies are dropped as duplicates)
    isolation_level: str = "read_committed"
    # Inputs processed at least once instead: their outputs go out at once through one shared
    # idempotent producer, and a position is committed (every `plain_commit_seconds`) only once
    # every output before it is acknowledged. A crash or a reset sends some outputs again, so this
    # is only for a stage whose every output the next, transactional stage de-duplicates (the
    # normalizer's parse stage); it saves that stage's transactions: their CPU and their latency.
    plain_topics: frozenset[str] = frozenset()
    plain_commit_seconds: float = 0.5
    # Transactional producers of the worker, used in turn. With 2, the next transaction sends its
    # records while the one before it is still committing (EndTxn and its markers), and commits once
    # that one has: two transactions in flight, committed in order. 1 = each transaction begins after
    # the one before it committed.
    producers: int = 2


@dataclass(slots=True)
class _Pending:
    """Processed, not yet committed: one batch's or tick's outputs, or a settled position alone."""

    outputs: list[Output]
    next_offset: int | None  # the input offset after it (None: a tick)
    weight: int  # input records + outputs (the queue bound)
    done: Callable[[], None] | None  # after it committed
    settle: bool = False  # only a position past records never handed over: a plain offset commit


@dataclass(slots=True)
class _Batch:
    """What one partition puts into one transaction: its queue, and the input offset after it."""

    part: _Partition
    pending: list[_Pending]
    next_offset: int | None


@dataclass(slots=True)
class _Partition:
    tp: TopicPartition
    processor: Processor
    position: int  # committed: records below it are done
    epoch: int  # when it was (re)opened: a batch handed over before that is from a stale position
    next_offset: int = 0  # processed: records below it are done or queued
    queue: list[_Pending] = field(default_factory=list)
    queued: int = 0  # weight of the queue
    # the sending of the round that took its queue, or (plain) its flush
    committing: asyncio.Task[None] | None = None
    # transactional: the commit of the last transaction holding its outputs
    last_commit: asyncio.Task[bool] | None = None
    failed: bool = False  # processing raised: its records are skipped until the reset reopens it
    closed: bool = False  # dropped: its queue is abandoned
    plain: bool = False  # at least once (config.plain_topics): sent by the shared idempotent producer
    acked: int = 0  # plain: every output of the records below it is acknowledged
    inflight: int = 0  # plain: weight sent, not yet acknowledged (the producer holds it in memory)
    reported: int = 0  # stateful: the group's committed offset, which only lag tools read

    def idle(self) -> bool:
        return (
            not self.queue
            and (self.committing is None or self.committing.done())
            and (self.last_commit is None or self.last_commit.done())
        )


class StreamApp:
    """Run `factory`'s processors over the assigned partitions of `config.topics`, exactly once."""

    def __init__(
        self,
        config: StreamConfig,
        factory: ProcessorFactory,
        transaction_seconds: Histogram | None = None,
    ) -> None:
        self.config = config
        self.factory = factory
        self.transaction_seconds = transaction_seconds
        self.consumer: AIOKafkaConsumer | None = None
        self._changelog_reader: AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        # one of: a rebalance step, a tick, a settling pass (batches are processed without awaiting,
        # so none of these ever sees one half done)
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._epoch = 0
        self._background: set[asyncio.Task[None]] = set()
        self._rounds: asyncio.Task[None] | None = None  # the commit rounds, while anything is queued
        self._plain_producer: AIOKafkaProducer | None = None  # idempotent, for config.plain_topics
        # the worker's transactional producers, used in turn (ids: `transactional_ids` of its lowest
        # transactional partition), each one's last commit, and the last commit of all (the next
        # transaction commits after it, so they commit in order)
        self._producers: tuple[AIOKafkaProducer, ...] = ()
        self._producer_ids: tuple[str, ...] = ()
        self._commits: list[asyncio.Task[bool] | None] = []
        self._last_commit: asyncio.Task[bool] | None = None
        self._turn = 0
        self._sending = asyncio.Lock()  # one transaction is begun and sent at a time
        self._resetting = False  # a failed transaction's reset of every transactional partition is due
        self.transactions = 0
        self.resets = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        if cfg.changelog is not None:
            await ensure_topics(cfg.bootstrap, [cfg.changelog])
            self._changelog_reader = AIOKafkaConsumer(
                bootstrap_servers=cfg.bootstrap,
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=cfg.partition_fetch_bytes,
                fetch_max_bytes=cfg.fetch_max_bytes,
            )
            await self._changelog_reader.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            client_id=cfg.group_id,
            enable_auto_commit=False,
            isolation_level=cfg.isolation_level,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=max(500, cfg.session_timeout_ms // 10),
            max_partition_fetch_bytes=cfg.partition_fetch_bytes,
            fetch_max_bytes=cfg.fetch_max_bytes,
            # a read_committed fetch may park on the broker until this long: the next stage's latency
            fetch_max_wait_ms=50,
        )
        if cfg.plain_topics:
            self._plain_producer = await start_producer(
                **{k: v for k, v in PRODUCER_DEFAULTS.items() if k != "linger_ms"},
                linger_ms=0,  # a batch's outputs are sent together anyway: lingering only delays them
                bootstrap_servers=cfg.bootstrap,
            )
        self.consumer.subscribe(list(cfg.topics), listener=_Listener(self))
        await self.consumer.start()

    async def run(self) -> None:
        """Process batches until stop(); the tick, offset-settling and position loops run alongside."""
        assert self.consumer is not None, "start() first"
        cfg = self.config
        loops = [asyncio.ensure_future(self._every(cfg.settle_seconds, self._settle))]
        if cfg.plain_topics or cfg.stateful_topics:
            loops.append(asyncio.ensure_future(self._every(cfg.plain_commit_seconds, self._commit_positions)))
        if cfg.tick_seconds:
            loops.append(asyncio.ensure_future(self._tick_loop()))
        try:
            while not self._stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=self.config.poll_ms, max_records=self.config.batch_max
                )
                # Taken when the records are handed over, not before the call: a partition (re)opened
                # after this point was seeked after these records were fetched (they are stale and
                # will be fetched again); one (re)opened before it was seeked before, and aiokafka
                # hands over only records fetched from the new position.
                if batch:
                    # no await from the hand-over to the queue: nothing sees a position moved past
                    # records that are neither processed nor queued
                    self._process(batch, self._epoch)
                    # getmany does not suspend while records are buffered: let the commits run, and
                    # wait for them while a partition has a full queue (memory stays bounded)
                    await asyncio.sleep(0)
                    while self._backlogged() and (busy := self._committing()):
                        await asyncio.wait(busy, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Commit what is queued, leave the group and close every client (after run() returned)."""
        for task in list(self._background):  # pending resets: nothing is to be reopened now
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        async with self._lock:
            await self._drop_draining(list(self._partitions))
        if self._rounds is not None:
            self._rounds.cancel()
            await asyncio.gather(self._rounds, return_exceptions=True)
        await self._stop_producers()
        if self.consumer is not None:
            await self.consumer.stop()
        if self._plain_producer is not None:
            await self._plain_producer.stop()
        if self._changelog_reader is not None:
            await self._changelog_reader.stop()

    # -- introspection (metrics) ---------------------------------------------------------------
    def processors(self) -> Iterator[tuple[TopicPartition, Processor]]:
        for tp, part in list(self._partitions.items()):
            yield tp, part.processor

    def assigned(self) -> int:
        """Input partitions owned and open now."""
        return len(self._partitions)

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet committed per owned partition (last stable offset − committed position)."""
        lags: dict[TopicPartition, int] = {}
        if self.consumer is None:
            return lags
        for tp, part in list(self._partitions.items()):
            with contextlib.suppress(Exception):  # a partition revoked meanwhile
                end = self.consumer.last_stable_offset(tp)
                if end is not None:
                    lags[tp] = max(0, end - part.position)
        return lags

    # -- batches -------------------------------------------------------------------------------
    def _process(self, batch: dict[TopicPartition, list[Record]], epoch: int) -> None:
        """Process each partition's records now; their outputs queue for its next transaction."""
        for tp, records in batch.items():
            part = self._partitions.get(tp)
            if part is None or part.epoch > epoch or part.failed:
                continue  # revoked, reopened (seeked) since the fetch, or failed: fetched again later
            fresh = [r for r in records if r.offset >= part.next_offset]
            if not fresh:
                continue
            try:
                outputs = part.processor.process(fresh)
                done = part.processor.after_commit()
            except Exception:  # a bug, not bad input (processors dead-letter that): retry from state
                log.exception("%s: processing failed; resetting the partition", _name(tp))
                self._fail(part, self.config.retry_seconds)
                continue
            part.next_offset = fresh[-1].offset + 1
            self._enqueue(part, _Pending(outputs, part.next_offset, len(fresh) + len(outputs), done))

    def _enqueue(self, part: _Partition, pending: _Pending) -> None:
        part.queue.append(pending)
        part.queued += pending.weight
        if part.plain:
            if part.committing is None or part.committing.done():
                part.committing = asyncio.ensure_future(self._flush(part))
            return
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.ensure_future(self._commit_rounds())

    def _backlogged(self) -> bool:
        queued = sum(part.queued + part.inflight for part in self._partitions.values())
        return queued >= self.config.queue_max

    def _committing(self) -> list[asyncio.Task[bool] | asyncio.Task[None]]:
        """The commit round and the plain partitions' flushes in progress."""
        tasks = [part.committing for part in self._partitions.values() if part.plain]
        return [task for task in (self._rounds, *tasks) if task is not None and not task.done()]

    def _fail(self, part: _Partition, delay: float) -> None:
        """Skip the partition's records from now on and reset it (state and position) after `delay`,
        in turn with rebalances (so a reset never fences a partition's new owner)."""
        part.failed = True
        self._spawn(self._reset_later(part, delay))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _commit_rounds(self) -> None:
        """Commit rounds: everything every transactional partition queued goes into one transaction
        (committed in the background, in turn, by `_finish`); what is processed meanwhile waits for
        the next round.

        One transaction per worker and round rather than one per partition: at 1,000 trades/s over
        six partitions, per-partition transactions cost the broker ~200 transactions/s (each a
        transaction-log write to begin, two to end, and a marker per partition), and queueing behind
        them doubled the normalizer's median latency (back to back: p50 42 → 19 ms; figures in
        services/normalizer/README.md)."""
        while True:
            due = [
                part
                for part in self._partitions.values()
                if part.queue and not part.closed and not part.plain and not part.failed
            ]
            if not due:
                return
            task = asyncio.ensure_future(self._commit_round(due))
            for part in due:
                part.committing = task
            await asyncio.gather(task, return_exceptions=True)

    async def _flush(self, part: _Partition) -> None:
        """A plain partition's sends, one flush at a time (its outputs stay in input order)."""
        while part.queue and not part.closed and not part.failed:
            if not await self._commit_queued(part):
                return

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` every `seconds` until stop(), in turn with rebalances and ticks."""
        while not self._stopping.is_set():
            await asyncio.sleep(seconds)
            try:
                async with self._lock:
                    await step()
            except Exception as exc:  # e.g. a rebalance in progress: next time
                log.debug("%s skipped: %r", step.__name__, exc)

    async def _commit_positions(self) -> None:
        """Commit the plain partitions' acknowledged positions and report the stateful ones' (whose
        positions commit in their changelog) to the group for lag tools, all in one request."""
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp, part in self._partitions.items():
            if part.plain and part.acked > part.position:
                offsets[tp] = part.acked
            elif tp.topic in self.config.stateful_topics and part.position > part.reported:
                offsets[tp] = part.position
        if not offsets:
            return
        await self.consumer.commit(offsets)
        for tp, offset in offsets.items():
            part = self._partitions[tp]
            part.reported = offset
            part.position = max(part.position, offset)

    async def _commit_queued(self, part: _Partition) -> bool:
        """A plain partition's queue: sent and acknowledged (False if the partition failed)."""
        pending, part.queue = part.queue, []
        weight, part.queued = part.queued, 0
        part.inflight += weight  # still bounded: aiokafka's producer has no memory limit of its own
        try:
            return await self._commit_plain(part, pending)
        finally:
            part.inflight -= weight

    async def _tick_loop(self) -> None:
        interval = self.config.tick_seconds or 1.0
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    for part in list(self._partitions.values()):
                        if part.failed or part.closed:
                            continue
                        try:
                            outputs = part.processor.tick()
                            done = part.processor.after_commit()
                        except Exception:
                            log.exception("%s: tick failed; resetting the partition", _name(part.tp))
                            self._fail(part, self.config.retry_seconds)
                            continue
                        if outputs or done is not None:
                            self._enqueue(part, _Pending(outputs, None, len(outputs), done))
            except Exception:  # a tick must never end the loop
                log.exception("tick failed")

    async def _settle(self) -> None:
        """Commit positions that moved past records never handed over (aborted transactions and their
        markers at a partition's tail), so the group's lag returns to 0 once everything is done."""
        assert self.consumer is not None
        for tp, part in list(self._partitions.items()):
            if not part.idle() or part.failed:
                continue
            processed = part.next_offset
            position = await asyncio.wait_for(self.consumer.position(tp), 1.0)
            # Records handed over are processed and queued without an await, so if nothing was queued
            # meanwhile, everything below the consumer's position was processed or never handed over.
            if self._partitions.get(tp) is part and part.next_offset == processed and position > processed:
                part.next_offset = position
                # through the queue: ordered with the partition's transactions, never behind one
                self._enqueue(part, _Pending([], position, 0, None, settle=True))

    async def _commit_plain(self, part: _Partition, pending: list[_Pending]) -> bool:
        """A plain partition's outputs, sent and acknowledged; its position is then acknowledged
        (committed by `_commit_positions`). False if the partition failed (it is being reset)."""
        assert self._plain_producer is not None
        offsets = [item.next_offset for item in pending if item.next_offset is not None]
        try:
            await self._send(self._plain_producer, [output for item in pending for output in item.outputs])
        except Exception as exc:
            log.warning("%s: send failed (%r); resetting the partition", _name(part.tp), exc)
            if not part.closed:
                self._fail(part, 0.0)
            return False
        if offsets:
            part.acked = offsets[-1]
        self._done(pending)
        return True

    async def _commit_round(self, due: list[_Partition]) -> None:
        """Take the partitions' queues and send them as one transaction on the worker's next
        producer: it begins once that producer's transaction before it has committed, its records
        are sent and acknowledged here (so they follow the previous transaction's in every log), and
        it commits in the background once the worker's previous transaction has (`_finish`).
        A partition whose queue holds only settled positions commits them as plain offsets."""
        async with self._sending:
            batches: list[_Batch] = []
            settled: dict[TopicPartition, int] = {}
            for part in due:
                pending, part.queue = part.queue, []
                part.queued = 0
                offsets = [item.next_offset for item in pending if item.next_offset is not None]
                batch = _Batch(part, pending, offsets[-1] if offsets else None)
                if pending and all(item.settle for item in pending) and batch.next_offset is not None:
                    settled[part.tp] = batch.next_offset
                elif pending:
                    batches.append(batch)
            if settled:
                await self._commit_settled(settled)
            if not batches:
                return
            outputs, group_offsets = self._transaction_records(batches)
            if not outputs and not group_offsets:  # ticks with nothing to publish: callbacks, in turn
                commit = asyncio.ensure_future(
                    self._finish(None, self._last_commit, batches, time.perf_counter())
                )
                self._last_commit = commit
                for batch in batches:
                    batch.part.last_commit = commit
                return
            if not self._producers:  # never drop a batch silently: its partition would skip it
                self._transaction_failed(RuntimeError("no transactional producer"))
                return
            turn = self._turn
            before = self._commits[turn]
            if before is not None and not await _succeeded(before):
                return  # that failure resets every transactional partition: these are processed again
            self._turn = (turn + 1) % len(self._producers)
            producer = self._producers[turn]
            started = time.perf_counter()
            try:
                await producer.begin_transaction()
                await self._send(producer, outputs)
                if group_offsets:
                    await producer.send_offsets_to_transaction(group_offsets, self.config.group_id)
            except Exception as exc:
                self._transaction_failed(exc)
                return
            commit = asyncio.ensure_future(self._finish(producer, self._last_commit, batches, started))
            self._commits[turn] = self._last_commit = commit
            for batch in batches:
                batch.part.last_commit = commit

    def _transaction_records(self, batches: list[_Batch]) -> tuple[list[Output], dict[TopicPartition, int]]:
        """A transaction's records — every batch's outputs, and a stateful partition's next input
        offset in its changelog — and the stateless partitions' offsets for the group."""
        changelog = self.config.changelog
        outputs: list[Output] = []
        group_offsets: dict[TopicPartition, int] = {}
        for batch in batches:
            outputs.extend(output for item in batch.pending for output in item.outputs)
            tp, next_offset = batch.part.tp, batch.next_offset
            if next_offset is None:
                continue
            if changelog is not None and tp.topic in self.config.stateful_topics:
                # the position travels with the state: two round trips (AddOffsetsToTxn,
                # TxnOffsetCommit) and a third transaction marker fewer than send_offsets_to_transaction
                outputs.append((changelog.name, POSITION_KEY, str(next_offset).encode(), tp.partition))
            else:
                group_offsets[tp] = next_offset
        return outputs, group_offsets

    async def _commit_settled(self, offsets: dict[TopicPartition, int]) -> None:
        """Positions past records never handed over (markers, aborted records): plain offset commits."""
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # only lag tools read these: the next settling pass tries again
            log.info("settled offsets not committed (%r)", exc)
            return
        for tp, offset in offsets.items():
            part = self._partitions.get(tp)
            if part is not None:
                part.position = max(part.position, offset)

    async def _finish(
        self,
        producer: AIOKafkaProducer | None,
        before: asyncio.Task[bool] | None,
        batches: list[_Batch],
        started: float,
    ) -> bool:
        """Commit a sent transaction once the one before it has committed (True). If that one
        failed, this one is left open: the reset's fencing aborts it."""
        if before is not None and not await _succeeded(before):
            return False
        if producer is not None:
            try:
                await producer.commit_transaction()
            except Exception as exc:
                self._transaction_failed(exc)
                return False
            self.transactions += 1
            if self.transaction_seconds is not None:
                self.transaction_seconds.observe(time.perf_counter() - started)
        for batch in batches:
            if batch.next_offset is not None:
                batch.part.position = batch.next_offset
            self._done(batch.pending)
        return True

    def _transaction_failed(self, exc: Exception) -> None:
        """Every transactional partition had (or may have had) outputs in the failed transaction:
        all of them are reset — producers, state and position — unless a reset is already due."""
        if self._resetting:
            return
        log.warning("transaction failed (%r); resetting every transactional partition", exc)
        self._resetting = True
        for part in self._partitions.values():
            if not part.plain:
                part.failed = True
        self._spawn(self._reset_transactions())

    @staticmethod
    def _done(pending: list[_Pending]) -> None:
        for item in pending:
            if item.done is not None:
                item.done()

    @staticmethod
    async def _send_batched(producer: AIOKafkaProducer, outputs: list[Output]) -> None:
        """`_send` for many records (a backlog): each partition's records in record batches
        built here (aiokafka's `create_batch`/`send_batch`; keyed ones to the partition the
        producer's partitioner picks). One `send()` per record costs a coroutine and a future each,
        and on Python 3.11 every future also asks the kernel for the process id (asyncio's
        running-loop check): ~10 % of the normalizer's CPU in a backlog drain, its sends ~20 % in all.

        Only for many records: small flushes (live traffic) sent this way reach the next stage in
        more, smaller produce requests (a batch per call and partition, where `send()` lets the
        flushes of several partitions share one), which doubled the transactions of the
        normalizer's stage 2 at 1,000 trades/s (80/s instead of 42) and made its latency worse (p99
        214 ms against 27–39 back to back)."""
        partitioner = PRODUCER_DEFAULTS["partitioner"]
        assert callable(partitioner)
        partitions_of: dict[str, list[int]] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value, partition in outputs:
            if partition is None:
                partitions = partitions_of.get(topic)
                if partitions is None:
                    partitions = partitions_of[topic] = sorted(await producer.partitions_for(topic))
                partition = partitioner(key, partitions, partitions)
            records = by_partition.get((topic, partition))
            if records is None:
                records = by_partition[topic, partition] = []
            records.append((key, value))
        acks: list[asyncio.Future[object]] = []
        for (topic, partition), records in by_partition.items():
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(timestamp=None, key=key, value=value) is not None:
                    continue
                if batch.record_count():  # full (and closed): sent, and a new one started
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=key, value=value) is not None:
                        continue
                # larger than a batch on its own: sent alone, after what is before it
                acks.append(await producer.send(topic, value, key=key, partition=partition))
                batch = producer.create_batch()
            if batch.record_count():
                batch.close()
                acks.append(await producer.send_batch(batch, topic, partition=partition))
        for ack in acks:
            await ack

    @staticmethod
    async def _send(producer: AIOKafkaProducer, outputs: list[Output]) -> None:
        """Send in order and wait until every record is acknowledged (raises if one is not); many
        records (a backlog's flush or transaction) in record batches (`_send_batched`)."""
        if len(outputs) >= BATCHED_SEND_MIN:
            await StreamApp._send_batched(producer, outputs)
            return
        send = producer.send
        acks = [
            await send(topic, value, key=key, partition=partition) for topic, key, value, partition in outputs
        ]
        for ack in acks:  # cheaper than gather(), which hooks a callback onto every future
            await ack

    # -- partitions ----------------------------------------------------------------------------
    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            await self._drop_draining([tp for tp in self._partitions if tp not in assigned])
            await self._idle_producers()
            new = sorted(assigned - set(self._partitions))
            if new:
                await self._open_retrying(new, fence=True)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._drop_draining(list(revoked))
            await self._idle_producers()

    async def _drop_draining(self, tps: list[TopicPartition]) -> None:
        """Drop partitions after what they processed has committed (the next owner starts after it):
        the transactional ones' queues go out together, in one transaction."""
        parts = [part for tp in tps if (part := self._partitions.get(tp)) is not None]
        due = [part for part in parts if not part.plain and part.queue and not part.failed]
        if due:
            with contextlib.suppress(Exception):  # a failure resets them all; the next owner redoes it
                await asyncio.wait_for(self._commit_round(due), self.config.transaction_timeout_ms / 1000)
        for tp in tps:
            await self._drop(tp, drain=True)

    async def _reset(self, part: _Partition) -> None:
        """A partition whose processor raised: its queue is dropped, then it reopens from its last
        commit (its transactions in flight commit first: they hold only batches processed before)."""
        if self._partitions.get(part.tp) is not part:
            return  # dropped or replaced meanwhile: nothing of it is left to reset
        self.resets += 1
        await self._drop(part.tp, drain=False)
        if self.consumer is not None and part.tp in self.consumer.assignment():
            await self._open_retrying([part.tp], fence=False)

    async def _reset_later(self, part: _Partition, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            await self._reset(part)

    async def _reset_transactions(self) -> None:
        """After a failed transaction: every transactional partition's queue is dropped, the
        producers are replaced (which aborts what they left open) and the partitions reopen from
        their last commit. The partitions' previous owners were fenced when this worker took them."""
        async with self._lock:
            self.resets += 1
            if self._rounds is not None and not self._rounds.done():
                self._rounds.cancel()
                await asyncio.gather(self._rounds, return_exceptions=True)
            await self._stop_producers()  # its commits in flight are cancelled: nothing waits for them
            reopen = [tp for tp, part in self._partitions.items() if not part.plain]
            for tp in reopen:
                await self._drop(tp, drain=False)
            self._resetting = False
            assignment = self.consumer.assignment() if self.consumer is not None else set()
            reopen = [tp for tp in reopen if tp in assignment]
            if reopen:
                await self._open_retrying(reopen, fence=False)

    async def _drop(self, tp: TopicPartition, drain: bool) -> None:
        """Forget a partition; with `drain`, what it has queued commits first (bounded by the
        transaction timeout), else it is abandoned (a reset re-reads state and position)."""
        part = self._partitions.pop(tp, None)  # no new records, no new rounds for it
        if part is None:
            return
        timeout = self.config.transaction_timeout_ms / 1000
        with contextlib.suppress(Exception):
            if drain and part.plain:
                if part.committing is not None and not part.committing.done():
                    await asyncio.wait_for(asyncio.shield(part.committing), timeout)
                if part.queue and not part.failed:
                    await asyncio.wait_for(self._commit_queued(part), timeout)
                if part.acked > part.position and self.consumer is not None:
                    await asyncio.wait_for(self.consumer.commit({tp: part.acked}), timeout)
            elif not part.plain:
                # the round and the transaction holding its outputs are shared with other partitions:
                # never cancelled here; with `drain`, its queue goes out in a transaction of its own
                if part.committing is not None and not part.committing.done():
                    await asyncio.wait_for(asyncio.shield(part.committing), timeout)
                if drain and part.queue and not part.failed:
                    await asyncio.wait_for(self._commit_round([part]), timeout)
                if part.last_commit is not None and not part.last_commit.done():
                    await asyncio.wait_for(asyncio.shield(part.last_commit), timeout)
        part.closed = True
        if part.plain and part.committing is not None and not part.committing.done():
            part.committing.cancel()
            with contextlib.suppress(BaseException):
                await part.committing

    async def _open_retrying(self, tps: list[TopicPartition], fence: bool) -> None:
        """Open partitions (see `_open`), retrying each one that fails until it opens or is gone."""
        try:
            await self._open(tps, fence)
            return
        except Exception as exc:
            log.warning("could not take %s over (%r); retrying", ", ".join(map(_name, tps)), exc)
        for tp in tps:
            while not self._stopping.is_set() and tp not in self._partitions:
                if self.consumer is None or tp not in self.consumer.assignment():
                    break
                await asyncio.sleep(self.config.retry_seconds)
                try:
                    await self._open([tp], fence)
                except Exception as exc:
                    log.warning("%s: could not take over (%r); retrying", _name(tp), exc)

    async def _open(self, tps: list[TopicPartition], fence: bool) -> None:
        """Fence the partitions' previous owners (with `fence`) and make sure the worker's producers
        run, then read each partition's state and position: all as of its last commit."""
        transactional = [tp for tp in tps if tp.topic not in self.config.plain_topics]
        if transactional:
            await self._start_producers(transactional, fence)
        for tp in tps:
            if tp not in self._partitions:
                await self._load(tp)

    async def _start_producers(self, new: list[TopicPartition], fence: bool) -> None:
        """With `fence`, start (and stop) a producer on every transactional id a previous owner of
        `new` may have used — those of every transactional partition up to the highest of `new` —
        which fences it and aborts its open transaction. Then run the worker's own producers, on the
        ids of its lowest transactional partition (restarted if that changed)."""
        cfg = self.config
        owned = sorted({*new, *(tp for tp, part in self._partitions.items() if not part.plain)})
        own = tuple(transactional_ids(cfg, owned[0]))
        if fence:
            highest = max(new)
            others = [
                transactional_id
                for tp in self._transactional_partitions()
                if tp <= highest
                for transactional_id in transactional_ids(cfg, tp)
                if transactional_id not in own
            ]
            await _stop(await self._start_transactional(others))
        if self._producers and self._producer_ids == own:
            return
        async with self._sending:  # a lower partition joined those kept: switch after the last commit
            if self._last_commit is not None:
                await _succeeded(self._last_commit)
            await self._stop_producers()
            self._producers = await self._start_transactional(own)
            self._producer_ids = own
            self._commits = [None] * len(self._producers)

    async def _start_transactional(self, ids: Iterable[str]) -> tuple[AIOKafkaProducer, ...]:
        """Started transactional producers (starting one fences every older producer of its id)."""
        options = {k: v for k, v in PRODUCER_DEFAULTS.items() if k not in ("enable_idempotence", "linger_ms")}
        started = await asyncio.gather(
            *(
                start_producer(
                    **options,
                    linger_ms=0,  # the commit sends everything anyway: lingering only delays it
                    bootstrap_servers=self.config.bootstrap,
                    transactional_id=transactional_id,
                    transaction_timeout_ms=self.config.transaction_timeout_ms,
                )
                for transactional_id in ids
            ),
            return_exceptions=True,
        )
        producers = tuple(p for p in started if isinstance(p, AIOKafkaProducer))
        for failure in started:
            if isinstance(failure, BaseException):
                await _stop(producers)
                raise failure
        return producers

    def _transactional_partitions(self) -> list[TopicPartition]:
        """Every partition of the transactional input topics, in order (from the consumer's metadata)."""
        assert self.consumer is not None
        tps = []
        for topic in self.config.topics:
            if topic in self.config.plain_topics:
                continue
            for partition in self.consumer.partitions_for_topic(topic) or ():
                tps.append(TopicPartition(topic, partition))
        return sorted(tps)

    async def _idle_producers(self) -> None:
        """Stop the worker's producers once it owns no transactional partition."""
        if not any(not part.plain for part in self._partitions.values()):
            await self._stop_producers()

    async def _stop_producers(self) -> None:
        """Stop the worker's producers; what they left open is aborted by the next owner of their ids
        (or by the broker, after the transaction timeout)."""
        commits = [task for task in (*self._commits, self._last_commit) if task is not None]
        for task in commits:
            if not task.done():
                task.cancel()
        await asyncio.gather(*commits, return_exceptions=True)
        producers, self._producers, self._producer_ids = self._producers, (), ()
        self._commits, self._last_commit, self._turn = [], None, 0
        await _stop(producers)

    async def _load(self, tp: TopicPartition) -> None:
        """After fencing: state from the changelog, position from the changelog too (a stateful
        partition) or else from the group's committed offset."""
        assert self.consumer is not None
        started = time.monotonic()
        # paused until registered below: `_process` skips records of partitions it does not know
        with paused(self.consumer, [tp]):
            state = await self._recover(tp)
            stored = state.pop(POSITION_KEY, None)
            committed = int(stored) if stored is not None else await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
                position = 0
            else:
                self.consumer.seek(tp, committed)
                position = committed
            processor = self.factory(tp, state)
        self._epoch += 1
        plain = tp.topic in self.config.plain_topics
        self._partitions[tp] = _Partition(
            tp,
            processor,
            position,
            self._epoch,
            position,
            plain=plain,
            acked=position,
            reported=committed if stored is None and committed is not None else 0,
        )
        log.info(
            "%s: taken over at offset %d with %d state records in %.2fs",
            _name(tp),
            position,
            len(state),
            time.monotonic() - started,
        )

    async def _recover(self, tp: TopicPartition) -> dict[bytes, bytes]:
        """The partition's state: its changelog partition read to the end, committed records only."""
        reader, spec = self._changelog_reader, self.config.changelog
        if reader is None or spec is None or tp.topic not in self.config.stateful_topics:
            return {}
        source = TopicPartition(spec.name, tp.partition)
        reader.assign([source])
        end = (await reader.end_offsets([source]))[source]
        state: dict[bytes, bytes] = {}
        if end > 0:
            await reader.seek_to_beginning(source)
            while await reader.position(source) < end:
                fetched = await reader.getmany(source, timeout_ms=500)
                for record in fetched.get(source, ()):
                    if record.key is None:
                        continue
                    if record.value is None:
                        state.pop(record.key, None)
                    else:
                        state[record.key] = record.value
        return state


class _Listener(ConsumerRebalanceListener):
    def __init__(self, app: StreamApp) -> None:
        self.app = app

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.app._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.app._assigned(set(assigned))


def transactional_ids(config: StreamConfig, tp: TopicPartition) -> list[str]:
    """The producers' ids of a worker whose lowest transactional partition is `tp`:
    `<group>-<topic>-<partition>`, then `….<n>`."""
    base = f"{config.group_id}-{tp.topic}-{tp.partition}"
    return [base if n == 0 else f"{base}.{n}" for n in range(max(1, config.producers))]


async def _stop(producers: Iterable[AIOKafkaProducer]) -> None:
    for producer in producers:
        with contextlib.suppress(Exception):
            await producer.stop()


async def _succeeded(commit: asyncio.Task[bool]) -> bool:
    """Whether a commit task committed (False if it failed or was cancelled)."""
    try:
        return await asyncio.shield(commit)
    except BaseException:
        if not commit.done():
            raise  # this waiter itself was cancelled
        return False


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


async def run_until_signalled(app: StreamApp) -> None:
    """Start, process until SIGTERM/SIGINT, then leave the group cleanly (the service's main)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    dump_tasks_on_sigusr1(loop)
    await app.start()
    try:
        await app.run()
    finally:
        await app.close()
