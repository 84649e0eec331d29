"""The Faust app: two agents (parse, dedup) batching events into one Kafka transaction per batch.

Faust gives the consumer group, partition assignment/rebalancing over N workers, batching
(`take_events`) and the worker lifecycle. Offsets are committed ONLY by our transactions
(see txn.py for why not Faust's exactly_once), so Faust's own offset commit is disabled here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

import faust
from faust.transport.consumer import Consumer as FaustConsumer

from services.common.instruments import default_instruments
from services.common.topics import RAW_PARTITIONS, RAW_TOPICS, TRADE_PARTITIONS, TRADES_PARSED
from services.normalizer import metrics as m
from services.normalizer.processor import DedupStage, ParseStage, Record
from services.normalizer.settings import NormalizerSettings
from services.normalizer.state import DedupStore
from services.normalizer.txn import TransactionalSender

log = logging.getLogger(__name__)


async def _no_commit(self: Any, *args: Any, **kwargs: Any) -> bool:
    """Faust's offset commit, disabled: our transactions commit offsets together with the outputs."""
    return False


FaustConsumer.force_commit = _no_commit  # type: ignore[method-assign]


def _record(event: Any) -> Record:
    message = event.message
    headers = message.headers
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        list(headers or ()),
        int(message.timestamp * 1000),
    )


class Normalizer:
    """Holds the app, both stages and their resources (started lazily on the first batch)."""

    def __init__(self, settings: NormalizerSettings) -> None:
        self.settings = settings
        app_id = settings.normalizer_app_id
        worker = (
            settings.normalizer_worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        datadir = settings.resolved_data_dir / "normalizer" / app_id
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            app_id,
            broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
            store="memory://",
            datadir=str(datadir),
            web_enabled=settings.normalizer_web_port > 0,
            web_port=settings.normalizer_web_port or 6066,
            web_host="127.0.0.1",
            topic_replication_factor=1,
            topic_partitions=TRADE_PARTITIONS,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.normalizer_session_timeout_s,
            broker_heartbeat_interval=max(0.5, settings.normalizer_session_timeout_s / 10),
            broker_commit_interval=3600.0,
            stream_wait_empty=False,
            producer_acks=-1,
        )
        bootstrap = settings.kafka_bootstrap
        timeout = settings.normalizer_transaction_timeout_ms
        self.parse_sender = TransactionalSender(bootstrap, f"{app_id}-parse-{worker}", app_id, timeout)
        self.dedup_sender = TransactionalSender(bootstrap, f"{app_id}-dedup-{worker}", app_id, timeout)
        self.store = DedupStore(bootstrap, app_id, settings.normalizer_dedup_horizon)
        self.parse_stage = ParseStage(self.parse_sender, default_instruments(settings.instruments_file))
        self.dedup_stage = DedupStage(self.dedup_sender, self.store)
        self._started: asyncio.Task[None] | None = None
        self._wire()

    async def ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await self._started

    async def _start(self) -> None:
        await self.parse_sender.start()
        await self.dedup_sender.start()
        await self.store.start()
        log.info(
            "normalizer %s: transactional producers and dedup store ready", self.settings.normalizer_app_id
        )

    async def _run(self, stage: Any, events: list[Any], name: str) -> None:
        await self.ensure_started()
        records = [_record(event) for event in events]
        try:
            with m.BATCH_SECONDS.labels(name).time():
                await stage.run(records)
        except asyncio.CancelledError:
            raise
        except Exception:  # the transaction was aborted: nothing of this batch is visible or committed
            log.critical("%s batch failed; exiting so the group re-delivers it", name, exc_info=True)
            logging.shutdown()
            os._exit(3)

    def _wire(self) -> None:
        app, settings = self.app, self.settings
        raw = app.topic(
            *RAW_TOPICS.values(), key_serializer="raw", value_serializer="raw", partitions=RAW_PARTITIONS
        )
        parsed = app.topic(
            TRADES_PARSED, key_serializer="raw", value_serializer="raw", partitions=TRADE_PARTITIONS
        )
        batch, within = settings.normalizer_batch_max, settings.normalizer_batch_within_ms / 1000

        @app.agent(raw, name="parse")
        async def parse_agent(stream: Any) -> None:
            async for events in stream.take_events(batch, within=within):
                await self._run(self.parse_stage, events, "parse")

        @app.agent(parsed, name="dedup")
        async def dedup_agent(stream: Any) -> None:
            async for events in stream.take_events(batch, within=within):
                await self._run(self.dedup_stage, events, "dedup")

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            self.store.drop({tp.partition for tp in revoked if tp.topic == TRADES_PARSED})
            self.parse_stage.sequences.drop_partitions(
                {tp.partition for tp in revoked if tp.topic in RAW_TOPICS.values()}
            )

        @app.timer(5.0)
        async def report_lag() -> None:
            consumer = app.consumer
            for tp in consumer.assignment():
                try:
                    highwater = consumer.highwater(tp)
                    position = await consumer.position(tp)
                except Exception:  # during a rebalance the partition may be gone
                    continue
                if highwater is not None and position is not None:
                    m.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
