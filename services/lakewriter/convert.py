"""Records → Arrow tables shaped like the Iceberg tables (exact decimals, µs timestamps, UTC).

Rows are built against the table's *current* schema, so a column added later by schema evolution
is filled with nulls for records that do not carry it (and old data files are never rewritten).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema

from services.common.raw import KIND_FRAME, RawHeaders
from services.common.schemas import Candle, DeadLetter, Trade

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record of a raw topic as the lake writer stores it in bronze."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: Sequence[tuple[str, bytes]] | None
    timestamp_ms: int = 0  # Kafka timestamp: the fallback received_at when headers are unusable





def trade_row(trade: Trade) -> dict[str, Any]:
    return {"exchange": trade.exchange, "symbol": trade.symbol, "exchange_symbol": trade.exchange_symbol,
            "trade_id": trade.trade_id, "exchange_ts": trade.exchange_ts, "received_at": trade.received_at,
            "price": trade.price, "quantity": trade.quantity, "quote_quantity": trade.quote_quantity,
            "side": trade.side, "source_topic": trade.source_topic,
            "source_partition": trade.source_partition, "source_offset": trade.source_offset}


def candle_row(candle: Candle) -> dict[str, Any]:
    return {"exchange": candle.exchange, "symbol": candle.symbol, "window_start": candle.window_start,
            "window_end": candle.window_end, "open": candle.open, "high": candle.high, "low": candle.low,
            "close": candle.close, "volume": candle.volume, "quote_volume": candle.quote_volume,
            "trade_count": candle.trade_count, "vwap": candle.vwap, "buy_volume": candle.buy_volume,
            "sell_volume": candle.sell_volume, "first_trade_ts": candle.first_trade_ts,
            "last_trade_ts": candle.last_trade_ts, "revision": candle.revision}


def dead_letter_row(dead: DeadLetter, kafka_partition: int = -1, kafka_offset: int = -1) -> dict[str, Any]:
    return {"received_at": dead.received_at, "exchange": dead.exchange, "reason": dead.reason,
            "detail": dead.detail, "payload": dead.payload, "element_index": dead.element_index,
            "source_topic": dead.source_topic, "source_partition": dead.source_partition,
            "source_offset": dead.source_offset, "kafka_partition": kafka_partition,
            "kafka_offset": kafka_offset}


def raw_row(record: RawRecord) -> dict[str, Any]:
    """A bronze row. Frames are kept byte-exact: valid UTF-8 as text (`frame`), anything else also as
    bytes (`frame_bytes`), with a lossy text in `frame` so the required column stays readable."""
    try:
        headers = RawHeaders.from_kafka(record.headers)
        received_ns, connection, seq, kind = (headers.received_at_ns, headers.connection_id, headers.seq,
                                              headers.kind)
    except ValueError:
        received_ns, connection, seq, kind = record.timestamp_ms * 1_000_000, "", -1, KIND_FRAME
    try:
        text, raw = record.value.decode("utf-8"), None
    except UnicodeDecodeError:
        text, raw = record.value.decode("utf-8", "replace"), record.value
    return {"received_at": received_ns // 1000, "received_at_ns": received_ns, "connection_id": connection,
            "frame_seq": seq, "kind": kind, "frame": text, "kafka_topic": record.topic,
            "kafka_partition": record.partition, "kafka_offset": record.offset, "frame_bytes": raw}


def arrow_schema(schema: Schema) -> pa.Schema:
    return schema_to_pyarrow(schema, include_field_ids=False)


def to_arrow(rows: Sequence[dict[str, Any]], schema: Schema) -> pa.Table:
    """Build an Arrow table with the table's schema; columns the rows lack are null.

    Decimals go from `Decimal` straight into decimal128(38,18) (no float anywhere). A row that does
    not fit (e.g. more than 18 fractional digits) raises pa.ArrowInvalid; see `to_arrow_lenient`.
    """
    target = arrow_schema(schema)
    columns: dict[str, pa.Array] = {}
    for field in target:
        values = [row.get(field.name) for row in rows]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=target)


def to_arrow_lenient(rows: Sequence[dict[str, Any]], schema: Schema,
                     reject: Callable[[dict[str, Any], Exception], None] | None = None) -> pa.Table:
    """Like to_arrow, but rows that cannot be represented are passed to `reject` and left out."""
    try:
        return to_arrow(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    target = arrow_schema(schema)
    good: list[dict[str, Any]] = []
    for row in rows:
        try:
            for field in target:
                pa.array([row.get(field.name)], type=field.type)
            good.append(row)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            if reject is not None:
                reject(row, exc)
            else:
                log.warning("row rejected: %s (%r)", exc, row)
    return to_arrow(good, schema)


def latest_candles(candles: Iterable[Candle]) -> list[Candle]:
    """One candle per key: the highest revision (ties: the later one) — what gold must show."""
    best: dict[tuple[str, str, str, int], Candle] = {}
    for candle in candles:
        key = (candle.exchange, candle.symbol, candle.timeframe, candle.window_start)
        current = best.get(key)
        if current is None or candle.revision >= current.revision:
            best[key] = candle
    return list(best.values())


__all__ = ["Decimal", "RawRecord", "arrow_schema", "candle_row", "dead_letter_row", "latest_candles",
           "raw_row", "to_arrow", "to_arrow_lenient", "trade_row"]
