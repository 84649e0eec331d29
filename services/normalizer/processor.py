"""The two stages' per-partition logic: records in → outputs (the stream runtime commits them, with
the input offsets, in one Kafka transaction per partition and batch; see services/common/stream.py).

Stage 1 (raw → parsed): parse frames, dead-letter bad elements, Coinbase sequence and disconnect gaps.
Stage 2 (parsed → trades): drop duplicates by natural key, report holes in sequential trade ids; its
state goes to the dedup changelog in the same transaction as the trades it let through.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import orjson

from services.common.instruments import InstrumentList
from services.common.raw import KIND_MARKER, DisconnectMarker, RawHeaders
from services.common.schemas import DeadLetter, Gap
from services.common.stream import Output, Record
from services.common.topics import GAPS, RAW_TOPICS, TRADES, TRADES_DLQ, TRADES_PARSED
from services.normalizer import metrics as m
from services.normalizer.dedup import SymbolState, new_state
from services.normalizer.parsers import Lineage, parse_frame
from services.normalizer.sequences import SequenceTracker

log = logging.getLogger(__name__)
EXCHANGE_OF_TOPIC = {topic: exchange for exchange, topic in RAW_TOPICS.items()}


class ParseProcessor:
    """Stage 1 for one raw partition (every frame of a connection is in one partition, in order)."""

    def __init__(self, instruments: InstrumentList) -> None:
        self.instruments = instruments
        self.sequences = SequenceTracker()
        self._frames: Counter[tuple[str, str]] = Counter()  # per batch, then into the metrics
        self._trades: Counter[str] = Counter()

    def process(self, records: list[Record]) -> list[Output]:
        with m.BATCH_SECONDS.labels("parse").time():
            outputs = self._process(records)
        for (exchange, kind), count in self._frames.items():
            m.FRAMES_IN.labels(exchange, kind).inc(count)
        for exchange, count in self._trades.items():
            m.TRADES_IN.labels(exchange).inc(count)
        self._frames.clear()
        self._trades.clear()
        return outputs

    def _process(self, records: list[Record]) -> list[Output]:
        outputs: list[Output] = []
        for record in records:
            try:
                self._one(record, outputs)
            except Exception as exc:  # never crash on input: the record becomes a dead letter
                log.exception("unexpected error on %s[%d]@%d", record.topic, record.partition, record.offset)
                exchange = EXCHANGE_OF_TOPIC.get(record.topic, "unknown")
                self._dead(
                    outputs,
                    record,
                    exchange,
                    record.timestamp * 1000,
                    "unknown_frame",
                    f"normalizer error: {exc!r}",
                    _text(record.value),
                    -1,
                )
        return outputs

    def tick(self) -> list[Output]:
        return []

    def after_commit(self) -> Callable[[], None]:
        return _count_parse_batch

    def _one(self, record: Record, outputs: list[Output]) -> None:
        exchange = EXCHANGE_OF_TOPIC.get(record.topic, "unknown")
        try:
            headers = RawHeaders.from_kafka(record.headers)
        except ValueError as exc:
            self._frames[(exchange, "rejected")] += 1
            self._dead(
                outputs,
                record,
                exchange,
                record.timestamp * 1000,
                "missing_field",
                str(exc),
                _text(record.value),
                -1,
            )
            return
        received_us = headers.received_at_ns // 1000
        value = record.value or b""
        if headers.kind == KIND_MARKER:
            self._marker(record, exchange, received_us, value, outputs)
            return
        result = parse_frame(
            exchange,
            value,
            received_us,
            Lineage(record.topic, record.partition, record.offset),
            self.instruments,
        )
        self._frames[(exchange, result.kind)] += 1
        if result.control is not None and result.control != "empty":
            m.CONTROL_FRAMES.labels(exchange, result.control).inc()
        if result.sequence is not None:
            hole = self.sequences.observe(record.partition, headers.connection_id, result.sequence)
            if hole is not None:
                gap = Gap(
                    exchange=exchange,
                    scope="connection",
                    subject=headers.connection_id,
                    kind="sequence",
                    expected=hole.expected,
                    received=hole.received,
                    missing=hole.missing,
                    detected_at=received_us,
                )
                _gap(outputs, gap)
        if result.trades:
            self._trades[exchange] += len(result.trades)
            for trade in result.trades:
                outputs.append((TRADES_PARSED, trade.key.encode(), trade.encode(), None))
        for rej in result.rejections:
            self._dead(
                outputs, record, exchange, received_us, rej.reason, rej.detail, rej.payload, rej.element_index
            )

    def _marker(
        self, record: Record, exchange: str, received_us: int, value: bytes, outputs: list[Output]
    ) -> None:
        try:
            marker = DisconnectMarker.decode(value)
        except Exception as exc:
            self._frames[(exchange, "rejected")] += 1
            self._dead(
                outputs,
                record,
                exchange,
                received_us,
                "unknown_frame",
                f"bad disconnect marker: {exc!r}",
                _text(value),
                -1,
            )
            return
        self._frames[(exchange, "marker")] += 1
        self.sequences.reset(marker.connection_id)
        _gap(
            outputs,
            Gap(
                exchange=exchange,
                scope="connection",
                subject=marker.connection_id,
                kind="disconnect",
                expected=None,
                received=None,
                missing=0,
                detected_at=received_us,
                down_from=marker.down_from_ns // 1000,
                down_to=marker.down_to_ns // 1000,
            ),
        )

    @staticmethod
    def _dead(
        outputs: list[Output],
        record: Record,
        exchange: str,
        received_us: int,
        reason: str,
        detail: str,
        payload: str,
        index: int,
    ) -> None:
        m.DEAD_LETTERS.labels(exchange, reason).inc()
        letter = DeadLetter(
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            exchange=exchange,
            received_at=received_us,
            reason=reason,
            detail=detail,
            payload=payload,
            element_index=index,
        )
        outputs.append((TRADES_DLQ, letter.key.encode(), letter.encode(), None))


def _gap(outputs: list[Output], gap: Gap) -> None:
    m.GAPS.labels(gap.exchange, gap.kind).inc()
    m.MISSING.labels(gap.exchange).inc(gap.missing)
    outputs.append((GAPS, gap.key.encode(), gap.encode(), None))


def _text(value: bytes | None) -> str:
    return (value or b"")[:65536].decode("utf-8", errors="replace")


class DedupProcessor:
    """Stage 2 for one parsed partition. Reads only what dedup needs from the parsed Trade JSON (no
    Decimal work): the published value is the parsed record's bytes, unchanged."""

    def __init__(self, partition: int, changelog: str, horizon: int, state: dict[bytes, bytes]) -> None:
        self.partition = partition
        self.changelog = changelog
        self.horizon = horizon
        self.states: dict[str, SymbolState] = {}
        for key, value in state.items():
            name = key.decode()
            self.states[name] = SymbolState.decode(
                value, horizon, new_state(name.split(":", 1)[0], 1).sequential
            )
        self._published: list[tuple[str, int, int]] = []  # (exchange, exchange_ts, received_at)

    def process(self, records: list[Record]) -> list[Output]:
        with m.BATCH_SECONDS.labels("dedup").time():
            return self._process(records)

    def _process(self, records: list[Record]) -> list[Output]:
        outputs: list[Output] = []
        published = self._published = []
        changed: dict[str, SymbolState] = {}
        states = self.states
        for record in records:
            try:
                data = orjson.loads(record.value or b"")
                exchange, symbol, trade_id = data["exchange"], data["symbol"], data["trade_id"]
                exchange_ts, received_at = int(data["exchange_ts"]), int(data["received_at"])
                if not (isinstance(exchange, str) and isinstance(symbol, str) and isinstance(trade_id, str)):
                    raise TypeError("exchange, symbol and trade_id must be strings")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error(
                    "undecodable parsed record %s[%d]@%d: %r",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )  # only a foreign writer could put this here
                continue
            key = f"{exchange}:{symbol}"
            state = states.get(key)
            if state is None:
                state = states[key] = new_state(exchange, self.horizon)
            verdict = state.check(trade_id)
            if verdict.gap_expected is not None:
                _gap(
                    outputs,
                    Gap(
                        exchange=exchange,
                        scope="symbol",
                        subject=symbol,
                        kind="sequence",
                        expected=verdict.gap_expected,
                        received=verdict.gap_received,
                        missing=verdict.missing,
                        detected_at=received_at,
                    ),
                )
            if not verdict.publish:
                m.DUPLICATES.labels(exchange, "horizon" if verdict.beyond_horizon else "seen").inc()
                continue
            changed[key] = state
            outputs.append((TRADES, key.encode(), record.value or b"", None))
            published.append((exchange, exchange_ts, received_at))
        for key, state in changed.items():
            outputs.append((self.changelog, key.encode(), state.encode(), self.partition))
        return outputs

    def tick(self) -> list[Output]:
        return []

    def after_commit(self) -> Callable[[], None]:
        published, self._published = self._published, []
        return lambda: _count_published(published)


def _count_parse_batch() -> None:
    m.TRANSACTIONS.labels("parse").inc()


def _count_published(published: list[tuple[str, int, int]]) -> None:
    """A batch's trades are visible downstream: count them and their latency."""
    m.TRANSACTIONS.labels("dedup").inc()
    if published:
        now_us = time.time_ns() // 1000
        counts: dict[str, int] = {}
        for exchange, exchange_ts, received_at in published:
            counts[exchange] = counts.get(exchange, 0) + 1
            m.EXCHANGE_LATENCY.labels(exchange).observe(max(0, now_us - exchange_ts) / 1e6)
            m.RECEIVED_LATENCY.labels(exchange).observe(max(0, now_us - received_at) / 1e6)
        for exchange, count in counts.items():
            m.TRADES_OUT.labels(exchange).inc(count)
