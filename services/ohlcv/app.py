"""The OHLCV worker: candles per partition of market.crypto.trades, exactly once.

A partition's batch goes out in the worker's next Kafka transaction (services/common/stream.py; one
per commit round for all its partitions), holding the final candles that closed, the changed candle
state (a compacted changelog co-partitioned with the trades) and the next input offset. A worker that
takes a partition over — after a kill -9 or a rebalance — therefore recovers exactly the candles and
watermark behind its committed offset and publishes no final twice and none never. Windows closed by
the wall clock on an idle partition (no offset to commit) go out from the tick, in a transaction
without offsets.

Live updates (market.crypto.ohlcv.live) are advisory snapshots of open candles: they are sent by a
plain idempotent producer as soon as a batch is applied, throttled per candle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer, TopicPartition

from services.common.kafka import PRODUCER_DEFAULTS
from services.common.schemas import SchemaError, Trade
from services.common.stream import Output, Record, StreamApp, StreamConfig, changelog_spec
from services.common.topics import OHLCV, OHLCV_LIVE, TRADE_PARTITIONS, TRADES, TopicSpec
from services.ohlcv import metrics
from services.ohlcv.engine import EngineConfig, PartitionState
from services.ohlcv.settings import OhlcvSettings

log = logging.getLogger(__name__)


def state_changelog(app_id: str) -> TopicSpec:
    return changelog_spec(
        f"{app_id}-state-changelog",
        "<exchange>:<symbol>:<timeframe>:<window start>, or ~wm",
        "CandleState JSON, or the partition's watermarks",
        TRADE_PARTITIONS,
    )


class CandleProcessor:
    """Candles of one partition: applies trades, closes windows, emits finals and state changes."""

    def __init__(
        self,
        partition: int,
        config: EngineConfig,
        changelog: str,
        grace_s: float,
        state: dict[bytes, bytes],
        on_update: Callable[[], None] | None = None,
    ) -> None:
        self.partition = partition
        self.on_update = on_update  # open candles changed: the live publisher may have updates due
        self.changelog = changelog
        self.grace_s = grace_s
        self.state = PartitionState(partition, config, time.monotonic())
        self.state.load((key.decode(), value) for key, value in state.items())
        self._finals: list[tuple[str, int, int]] = []  # (timeframe, revision, window end µs) to count

    def process(self, records: list[Record]) -> list[Output]:
        started = time.perf_counter()
        state = self.state
        now = time.monotonic()
        duplicates = invalid = 0
        for record in records:
            try:
                trade = Trade.decode(record.value or b"")
            except SchemaError as exc:
                invalid += 1
                log.warning("partition %d offset %d: undecodable trade skipped: %s", *_at(record), exc)
                continue
            if not state.apply(trade, record.offset, now):
                duplicates += 1
        metrics.TRADES_IN.inc(len(records))
        if duplicates:
            metrics.TRADES_SKIPPED.labels("duplicate").inc(duplicates)
        if invalid:
            metrics.TRADES_SKIPPED.labels("invalid").inc(invalid)
        state.close_due()
        outputs = self._outputs()
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        if self.on_update is not None and state.live_dirty:
            self.on_update()
        return outputs

    def tick(self) -> list[Output]:
        """Idle partitions: the watermark follows the wall clock and closes windows."""
        state = self.state
        now_us = time.time_ns() // 1000
        state.advance_idle(now_us, time.monotonic())
        if state.watermark is not None:
            metrics.WATERMARK_LAG.labels(str(self.partition)).set(max(0.0, (now_us - state.watermark) / 1e6))
        state.close_due()
        if not state.pending:
            return []  # a moved idle watermark alone is not worth a transaction: it is recomputed
        return self._outputs()

    def after_commit(self) -> Callable[[], None] | None:
        finals, self._finals = self._finals, []
        if not finals:
            return None
        grace_s = self.grace_s

        def count() -> None:
            now_s = time.time()
            for timeframe, revision, end_us in finals:
                metrics.CANDLES_OUT.labels(timeframe, "final" if revision == 0 else "revision").inc()
                if revision == 0:
                    metrics.CLOSE_LATENCY.labels(timeframe).observe(max(0.0, now_s - end_us / 1e6 - grace_s))

        return count

    def _outputs(self) -> list[Output]:
        """Finals of the closed candles, then every state change (same transaction)."""
        state = self.state
        outputs: list[Output] = []
        for candle, revision, version in state.finals_due():
            record = candle.to_candle(revision)
            outputs.append((OHLCV, record.key.encode(), record.encode(), None))
            state.mark_published(candle, revision, version)
            self._finals.append((candle.timeframe, revision, candle.end))
        state.purge()
        partition = self.partition
        for key, value in state.drain_persist():
            outputs.append((self.changelog, key.encode(), value, partition))
        return outputs


class LivePublisher:
    """Sends throttled snapshots of changed open candles to market.crypto.ohlcv.live.

    Woken by `wake` when a batch changed candles, and otherwise exactly when the next throttled
    candle may be sent: a live update is never held longer than its candle's interval requires."""

    def __init__(
        self, app: StreamApp, bootstrap: str, client_id: str, wake: asyncio.Event | None = None
    ) -> None:
        self.app = app
        self.wake = wake or asyncio.Event()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, client_id=client_id, **{**PRODUCER_DEFAULTS, "linger_ms": 0}
        )

    async def run(self, max_wait: float) -> None:
        await self.producer.start()
        try:
            while True:
                self.wake.clear()  # before publishing: a batch applied meanwhile wakes the next pass
                next_due = await self.publish()
                delay = max_wait if next_due is None else min(max_wait, next_due - time.monotonic())
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), delay)
        finally:
            await self.producer.stop()

    async def publish(self) -> float | None:
        """Send the due updates; returns when the next throttled one is due (monotonic), if any."""
        now = time.monotonic()
        next_due: float | None = None
        for _tp, processor in self.app.processors():
            assert isinstance(processor, CandleProcessor)
            state = processor.state
            for candle in state.live_due(now):
                snapshot = candle.to_candle(-1)
                await self.producer.send(OHLCV_LIVE, snapshot.encode(), key=snapshot.live_key.encode())
                metrics.CANDLES_OUT.labels(candle.timeframe, "live").inc()
            if state.live_next_due is not None and (next_due is None or state.live_next_due < next_due):
                next_due = state.live_next_due
        return next_due


def create_app(settings: OhlcvSettings, on_update: Callable[[], None] | None = None) -> StreamApp:
    """The worker's stream app; `on_update` is called when a batch changed open candles."""
    config = EngineConfig(
        grace_us=int(settings.ohlcv_grace_seconds * 1_000_000),
        idle_timeout=settings.ohlcv_idle_timeout_seconds,
        horizon_us=int(settings.ohlcv_correction_horizon_seconds * 1_000_000),
        live_interval=settings.ohlcv_live_interval_ms / 1000,
    )
    changelog = state_changelog(settings.ohlcv_app_id)

    def processor(tp: TopicPartition, state: dict[bytes, bytes]) -> CandleProcessor:
        candles = CandleProcessor(
            tp.partition, config, changelog.name, settings.ohlcv_grace_seconds, state, on_update
        )
        log.info(
            "partition %d: %d candles loaded, watermark %s",
            tp.partition,
            len(candles.state.candles),
            candles.state.watermark,
        )
        return candles

    return StreamApp(
        StreamConfig(
            bootstrap=settings.kafka_bootstrap,
            group_id=settings.ohlcv_app_id,
            topics=(TRADES,),
            changelog=changelog,
            stateful_topics=frozenset({TRADES}),
            batch_max=settings.ohlcv_batch_max,
            poll_ms=settings.ohlcv_batch_within_ms,
            session_timeout_ms=int(settings.ohlcv_session_timeout_seconds * 1000),
            transaction_timeout_ms=settings.ohlcv_transaction_timeout_ms,
            tick_seconds=tick_seconds(settings),
        ),
        processor,
        metrics.TRANSACTION_SECONDS,
    )


def tick_seconds(settings: OhlcvSettings) -> float:
    """Often enough for the live throttle and for closing idle windows promptly."""
    return min(0.05, settings.ohlcv_live_interval_ms / 1000 / 10)


async def report_gauges(app: StreamApp, interval: float = 1.0) -> None:
    while True:
        open_total = closed_total = 0
        for _tp, processor in app.processors():
            assert isinstance(processor, CandleProcessor)
            opened, closed = processor.state.counts()
            open_total += opened
            closed_total += closed
        metrics.OPEN_CANDLES.labels("open").set(open_total)
        metrics.OPEN_CANDLES.labels("closed").set(closed_total)
        for tp, lag in app.lag().items():
            metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lag)
        await asyncio.sleep(interval)


def _at(record: Record) -> tuple[int, int]:
    return record.partition, record.offset
