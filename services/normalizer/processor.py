"""The two stages' per-partition logic: records in → outputs (services/common/stream.py sends them).

Stage 1 (raw → parsed, at least once): parse frames, dead-letter bad elements, Coinbase sequence and
disconnect gaps. Everything it produces goes to the parsed topic: trades keyed by symbol, dead
letters and gaps as forwards keyed by their raw partition, each tagged with its place in the raw
input (offset, slot), so that stage 2 can drop what a restarted or reset stage 1 sends again.
Stage 2 (parsed → trades, dlq, gaps; in the worker's Kafka transactions): drop duplicate
trades by natural key and repeated forwards by their place, report holes in sequential trade ids;
its state goes to the dedup changelog in the same transaction as what it let through.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import orjson

from services.common.instruments import InstrumentList
from services.common.metrics import observe_many
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
FORWARD_TOPICS = frozenset({TRADES_DLQ, GAPS})


FORWARD_PREFIX = b"@"  # key of a forward on the parsed topic: @<raw topic>:<raw partition>
SLOT_GAP = 0  # a raw record's forwards: its gap, its dead letters (element index + 2; whole frame: 1)
SLOT_ERROR = -1  # the dead letter of an unexpected error


def forward(
    record: Record, topic: str, key: str, value: bytes, slot: int, labels: tuple[str, ...], missing: int = 0
) -> Output:
    """A dead letter or gap of raw `record`, on its way through stage 2 to `topic`. Its key sends all
    forwards of one raw partition to one parsed partition, in input order; (offset, slot) says where
    in the raw input it comes from (deterministic: a repeat of it has the same place)."""
    envelope = {
        "to": topic,
        "key": key,
        "value": value.decode(),
        "offset": record.offset,
        "slot": slot,
        "labels": labels,  # its metric's labels: counted when stage 2 publishes it
        "missing": missing,
    }
    source = FORWARD_PREFIX + f"{record.topic}:{record.partition}".encode()
    return (TRADES_PARSED, source, orjson.dumps(envelope), None)


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
                    slot=SLOT_ERROR,
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
                outputs.append(_forward_gap(record, gap))
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
        gap = Gap(
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
        )
        outputs.append(_forward_gap(record, gap))

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
        slot: int | None = None,
    ) -> None:
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
        slot = index + 2 if slot is None else slot
        outputs.append(forward(record, TRADES_DLQ, letter.key, letter.encode(), slot, (exchange, reason)))


def _forward_gap(record: Record, gap: Gap) -> Output:
    return forward(record, GAPS, gap.key, gap.encode(), SLOT_GAP, (gap.exchange, gap.kind), gap.missing)


def _gap(outputs: list[Output], counted: list[tuple[str, list[str], int]], gap: Gap) -> None:
    """A sequence gap seen by the dedup stage: published with its batch, counted once that commits."""
    outputs.append((GAPS, gap.key.encode(), gap.encode(), None))
    counted.append((GAPS, [gap.exchange, gap.kind], gap.missing))


def _count_gap(labels: list[str], missing: int) -> None:
    m.GAPS.labels(*labels).inc()
    m.MISSING.labels(labels[0]).inc(missing)


def _text(value: bytes | None) -> str:
    return (value or b"")[:65536].decode("utf-8", errors="replace")


@dataclass(slots=True)
class ForwardMark:
    """The furthest place (raw offset, and the slots seen at it) forwarded from one raw partition."""

    offset: int
    slots: set[int]

    def admit(self, offset: int, slot: int) -> bool:
        """Whether (offset, slot) is new; records it if so. Stage 1 sends a raw partition's forwards in
        input order, so anything before the mark was forwarded already (by this or a former run)."""
        if offset < self.offset or (offset == self.offset and slot in self.slots):
            return False
        if offset > self.offset:
            self.offset, self.slots = offset, set()
        self.slots.add(slot)
        return True

    def encode(self) -> bytes:
        return orjson.dumps([self.offset, sorted(self.slots)])

    @classmethod
    def decode(cls, value: bytes) -> ForwardMark:
        offset, slots = orjson.loads(value)
        return cls(int(offset), {int(slot) for slot in slots})


class _TradeKey(msgspec.Struct):
    """What stage 2 reads of a parsed Trade JSON, type-checked (the rest passes through as bytes):
    a typed msgspec decode skips the other fields, ~2x faster than a full orjson.loads."""

    exchange: str
    symbol: str
    trade_id: str
    exchange_ts: int
    received_at: int


_TRADE_KEY = msgspec.json.Decoder(_TradeKey)


class DedupProcessor:
    """Stage 2 for one parsed partition. Reads only what dedup needs from the parsed Trade JSON (no
    Decimal work): the published value is the parsed record's bytes, unchanged. Forwards (dead
    letters, gaps) are published once per place in the raw input."""

    def __init__(self, partition: int, changelog: str, horizon: int, state: dict[bytes, bytes]) -> None:
        self.partition = partition
        self.changelog = changelog
        self.horizon = horizon
        self.states: dict[str, SymbolState] = {}
        self.marks: dict[bytes, ForwardMark] = {}
        for key, value in state.items():
            if key.startswith(FORWARD_PREFIX):
                self.marks[key] = ForwardMark.decode(value)
                continue
            name = key.decode()
            self.states[name] = SymbolState.decode(
                value, horizon, new_state(name.split(":", 1)[0], 1).sequential
            )
        self._published: list[tuple[str, int, int]] = []  # (exchange, exchange_ts, received_at)
        self._forwarded: list[tuple[str, list[str], int]] = []  # (topic, metric labels, missing)

    def process(self, records: list[Record]) -> list[Output]:
        with m.BATCH_SECONDS.labels("dedup").time():
            return self._process(records)

    def _process(self, records: list[Record]) -> list[Output]:
        outputs: list[Output] = []
        published = self._published = []
        forwarded = self._forwarded = []
        changed: dict[str, SymbolState] = {}
        moved: dict[bytes, ForwardMark] = {}
        states = self.states
        for record in records:
            if record.key is not None and record.key.startswith(FORWARD_PREFIX):
                self._forward(record, outputs, forwarded, moved)
                continue
            try:
                trade = _TRADE_KEY.decode(record.value or b"")
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:
                log.error(
                    "undecodable parsed record %s[%d]@%d: %r",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )  # only a foreign writer could put this here
                continue
            exchange, symbol, trade_id = trade.exchange, trade.symbol, trade.trade_id
            key = f"{exchange}:{symbol}"
            state = states.get(key)
            if state is None:
                state = states[key] = new_state(exchange, self.horizon)
            verdict = state.check(trade_id)
            if verdict.gap_expected is not None:
                _gap(
                    outputs,
                    forwarded,
                    Gap(
                        exchange=exchange,
                        scope="symbol",
                        subject=symbol,
                        kind="sequence",
                        expected=verdict.gap_expected,
                        received=verdict.gap_received,
                        missing=verdict.missing,
                        detected_at=trade.received_at,
                    ),
                )
            if not verdict.publish:
                m.DUPLICATES.labels(exchange, "horizon" if verdict.beyond_horizon else "seen").inc()
                continue
            changed[key] = state
            outputs.append((TRADES, key.encode(), record.value or b"", None))
            published.append((exchange, trade.exchange_ts, trade.received_at))
        for key, state in changed.items():
            outputs.append((self.changelog, key.encode(), state.encode(), self.partition))
        for source, mark in moved.items():
            outputs.append((self.changelog, source, mark.encode(), self.partition))
        return outputs

    def _forward(
        self,
        record: Record,
        outputs: list[Output],
        forwarded: list[tuple[str, list[str], int]],
        moved: dict[bytes, ForwardMark],
    ) -> None:
        source = record.key or b""
        try:
            envelope = orjson.loads(record.value or b"")
            topic, key, value = envelope["to"], envelope["key"], envelope["value"]
            offset, slot = int(envelope["offset"]), int(envelope["slot"])
            labels, missing = [str(label) for label in envelope["labels"]], int(envelope["missing"])
            if topic not in FORWARD_TOPICS or not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"not a forward to {sorted(FORWARD_TOPICS)}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.error("undecodable forward %s[%d]@%d: %r", record.topic, record.partition, record.offset, exc)
            return  # only a foreign writer could put this here
        mark = self.marks.get(source)
        if mark is None:
            mark = self.marks[source] = ForwardMark(-1, set())
        if not mark.admit(offset, slot):
            m.DUPLICATES.labels(labels[0] if labels else "unknown", "repeat").inc()
            return
        moved[source] = mark
        outputs.append((topic, key.encode(), value.encode(), None))
        forwarded.append((topic, labels, missing))

    def tick(self) -> list[Output]:
        return []

    def after_commit(self) -> Callable[[], None]:
        published, self._published = self._published, []
        forwarded, self._forwarded = self._forwarded, []
        return lambda: _count_published(published, forwarded)


def _count_parse_batch() -> None:
    m.TRANSACTIONS.labels("parse").inc()


def _count_published(
    published: list[tuple[str, int, int]], forwarded: list[tuple[str, list[str], int]]
) -> None:
    """A batch's trades, dead letters and gaps are visible downstream: count them, and the trades'
    latency."""
    m.TRANSACTIONS.labels("dedup").inc()
    for topic, labels, missing in forwarded:
        if topic == TRADES_DLQ:
            m.DEAD_LETTERS.labels(*labels).inc()
        else:
            _count_gap(labels, missing)
    if published:
        now_us = time.time_ns() // 1000
        by_exchange: dict[str, tuple[list[float], list[float]]] = {}
        for exchange, exchange_ts, received_at in published:
            latencies = by_exchange.get(exchange)
            if latencies is None:
                latencies = by_exchange[exchange] = ([], [])
            latencies[0].append(max(0, now_us - exchange_ts) / 1e6)
            latencies[1].append(max(0, now_us - received_at) / 1e6)
        for exchange, (from_exchange, from_received) in by_exchange.items():
            observe_many(m.EXCHANGE_LATENCY.labels(exchange), from_exchange)
            observe_many(m.RECEIVED_LATENCY.labels(exchange), from_received)
            m.TRADES_OUT.labels(exchange).inc(len(from_exchange))
