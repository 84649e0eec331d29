"""Records → Arrow tables shaped like the Iceberg tables (exact decimals, µs timestamps, UTC).

Rows are built against the table's *current* schema, so a column added later by schema evolution
is filled with nulls for records that do not carry it (and old data files are never rewritten).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema

from services.common.raw import KIND_FRAME, RawHeaders
from services.common.schemas import Candle, DeadLetter, SchemaError, Trade
from services.common.tables import SILVER_TRADES, TABLES

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
    return {
        "exchange": trade.exchange,
        "symbol": trade.symbol,
        "exchange_symbol": trade.exchange_symbol,
        "trade_id": trade.trade_id,
        "exchange_ts": trade.exchange_ts,
        "received_at": trade.received_at,
        "price": trade.price,
        "quantity": trade.quantity,
        "quote_quantity": trade.quote_quantity,
        "side": trade.side,
        "source_topic": trade.source_topic,
        "source_partition": trade.source_partition,
        "source_offset": trade.source_offset,
    }


def candle_row(candle: Candle) -> dict[str, Any]:
    return {
        "exchange": candle.exchange,
        "symbol": candle.symbol,
        "window_start": candle.window_start,
        "window_end": candle.window_end,
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "quote_volume": candle.quote_volume,
        "trade_count": candle.trade_count,
        "vwap": candle.vwap,
        "buy_volume": candle.buy_volume,
        "sell_volume": candle.sell_volume,
        "first_trade_ts": candle.first_trade_ts,
        "last_trade_ts": candle.last_trade_ts,
        "revision": candle.revision,
    }


def dead_letter_row(dead: DeadLetter, kafka_partition: int = -1, kafka_offset: int = -1) -> dict[str, Any]:
    return {
        "received_at": dead.received_at,
        "exchange": dead.exchange,
        "reason": dead.reason,
        "detail": dead.detail,
        "payload": dead.payload,
        "element_index": dead.element_index,
        "source_topic": dead.source_topic,
        "source_partition": dead.source_partition,
        "source_offset": dead.source_offset,
        "kafka_partition": kafka_partition,
        "kafka_offset": kafka_offset,
    }


def raw_row(record: RawRecord) -> dict[str, Any]:
    """A bronze row. Frames are kept byte-exact: valid UTF-8 as text (`frame`), anything else also as
    bytes (`frame_bytes`), with a lossy text in `frame` so the required column stays readable."""
    try:
        headers = RawHeaders.from_kafka(record.headers)
        received_ns, connection, seq, kind = (
            headers.received_at_ns,
            headers.connection_id,
            headers.seq,
            headers.kind,
        )
    except ValueError:
        received_ns, connection, seq, kind = record.timestamp_ms * 1_000_000, "", -1, KIND_FRAME
    try:
        text, raw = record.value.decode("utf-8"), None
    except UnicodeDecodeError:
        text, raw = record.value.decode("utf-8", "replace"), record.value
    return {
        "received_at": received_ns // 1000,
        "received_at_ns": received_ns,
        "connection_id": connection,
        "frame_seq": seq,
        "kind": kind,
        "frame": text,
        "kafka_topic": record.topic,
        "kafka_partition": record.partition,
        "kafka_offset": record.offset,
        "frame_bytes": raw,
    }


_TRADE_FIELDS = tuple(f.name for f in dataclass_fields(Trade))
_DECIMAL_TEXT = r"^-?[0-9]{1,20}(\.[0-9]{1,18})?$"  # what fits decimal(38,18), plain notation only


def trade_row_from_json(payload: bytes) -> dict[str, Any]:
    """The hot path of silver: Trade JSON → row without building a Trade (same checks as Trade.decode:
    every field present, decimals as JSON strings). Decimal strings stay text until the Arrow build,
    which parses them exactly (decimal_array)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError("Trade must be a JSON object")
    try:
        row = {name: data[name] for name in _TRADE_FIELDS}
    except KeyError as exc:
        raise SchemaError(f"not a valid Trade: missing {exc}") from exc
    for name in Trade._decimal_fields:
        if not isinstance(row[name], str):
            raise SchemaError(f"Trade.{name} must be a decimal string, got {row[name]!r}")
    return row


def decimal_array(values: list[Any], type_: pa.DataType) -> pa.Array:
    """Decimal objects or plain decimal strings → decimal128, exactly (never through float).

    Strings are cast by Arrow only after a regex proves they are plain decimals that fit (Arrow's cast
    would silently overflow on exponents such as '1e30'); anything else goes through Decimal, which
    raises for values that do not fit."""
    if values and all(isinstance(v, str) for v in values):
        text = pa.array(values, pa.string())
        if pc.all(pc.match_substring_regex(text, _DECIMAL_TEXT)).as_py():
            return text.cast(type_)
        values = [Decimal(v) for v in values]
    elif any(isinstance(v, str) for v in values):
        values = [Decimal(v) if isinstance(v, str) else v for v in values]
    return pa.array(values, type=type_)


def arrow_schema(schema: Schema) -> pa.Schema:
    return schema_to_pyarrow(schema, include_field_ids=False)


SILVER_ARROW = arrow_schema(TABLES[SILVER_TRADES].schema)


def _json_type(type_: pa.DataType) -> pa.DataType:
    """How a silver column is spelled in Trade JSON: decimals as text, timestamps as µs integers."""
    if pa.types.is_decimal(type_):
        return pa.string()
    if pa.types.is_timestamp(type_):
        return pa.int64()
    return type_


# Each value is parsed as {"v": <value>}: a value that is not exactly one JSON object (empty, two objects,
# trailing text, an array, a bare string) makes the parse fail instead of adding or shifting rows.
_TRADES_JSON = pj.ParseOptions(
    explicit_schema=pa.schema(
        [pa.field("v", pa.struct([pa.field(f.name, _json_type(f.type)) for f in SILVER_ARROW]))]
    ),
    unexpected_field_behavior="ignore",
)


def trades_table(values: Sequence[bytes | None]) -> pa.Table | None:
    """Many Trade JSON values (one fetch of one partition) → one Arrow table shaped like silver_trades.

    The hot path of silver: Arrow's JSON reader parses the whole block in C++ (no Python object per
    record or field) with an explicit schema, so its checks are those of the per-record path
    (`trade_row_from_json` + `to_arrow`): every field present and not null (JSON types are strict:
    a number where a string is expected, a float or a string for an integer, an int32 overflow all
    fail), decimals as JSON strings of plain decimal text that fits decimal(38,18), cast exactly by
    Arrow (never through float). Returns None when ANY value does not pass: the caller then decides
    record by record, where bad records are rejected and counted. Extra fields are ignored, as in
    the per-record path.
    """
    if not values:
        return None
    try:
        body = b'}\n{"v":'.join(values)  # type: ignore[arg-type]
    except TypeError:  # a null value (tombstone)
        return None
    if body.count(b"\n") != len(values) - 1:  # a value holding a newline: parse it on its own
        return None
    buffer = b'{"v":' + body + b"}"
    try:
        parsed = pj.read_json(
            pa.py_buffer(buffer),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(buffer) + 1),
            parse_options=_TRADES_JSON,
        )
    except (pa.ArrowException, ValueError):  # ValueError: also invalid UTF-8
        return None
    if parsed.num_rows != len(values):
        return None
    struct = parsed.column(0).combine_chunks()
    if struct.null_count:
        return None
    columns = []
    for field, column in zip(SILVER_ARROW, struct.flatten(), strict=True):
        if column.null_count:
            return None
        if pa.types.is_decimal(field.type):
            if not pc.all(pc.match_substring_regex(column, _DECIMAL_TEXT)).as_py():
                return None  # exponents, '+1', '.5', > 18 decimals ...: Decimal() judges each value
            column = column.cast(field.type)
        elif column.type != field.type:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=SILVER_ARROW)


def conform(data: pa.Table, target: pa.Schema) -> pa.Table:
    """An Arrow table built for the contract's columns, laid out as the table's current schema (which
    may have gained columns since: those are null)."""
    if data.schema.equals(target):
        return data
    names = set(data.column_names)
    columns = [
        data.column(f.name).cast(f.type) if f.name in names else pa.nulls(data.num_rows, f.type)
        for f in target
    ]
    return pa.Table.from_arrays(columns, schema=target)


def to_arrow(rows: Sequence[dict[str, Any]], schema: Schema) -> pa.Table:
    """Build an Arrow table with the table's schema; columns the rows lack are null.

    Decimals go from `Decimal` straight into decimal128(38,18) (no float anywhere). A row that does
    not fit (e.g. more than 18 fractional digits) raises pa.ArrowInvalid; see `to_arrow_lenient`.
    """
    target = arrow_schema(schema)
    text_schema = pa.schema(
        [pa.field(f.name, pa.string(), f.nullable) if pa.types.is_decimal(f.type) else f for f in target]
    )
    try:  # fast path (silver): decimals arrive as text; Arrow builds the table from the dicts in C++
        table = pa.Table.from_pylist(list(rows), schema=text_schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        table = None
    if table is not None:
        for index, field in enumerate(target):
            if pa.types.is_decimal(field.type):
                text = table.column(index).combine_chunks()
                if text.null_count == 0 and not pc.all(pc.match_substring_regex(text, _DECIMAL_TEXT)).as_py():
                    table = None  # not plain decimal text: let Decimal() judge each value below
                    break
                table = table.set_column(index, field, text.cast(field.type))
        if table is not None:
            return table.cast(target)
    columns: dict[str, pa.Array] = {}
    for field in target:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_decimal(field.type):
            columns[field.name] = decimal_array(values, field.type)
        else:
            columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=target)


def to_arrow_lenient(
    rows: Sequence[dict[str, Any]],
    schema: Schema,
    reject: Callable[[dict[str, Any], Exception], None] | None = None,
) -> pa.Table:
    """Like to_arrow, but rows that cannot be represented are passed to `reject` and left out."""
    try:
        return to_arrow(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError, ArithmeticError):
        pass
    good: list[dict[str, Any]] = []
    for row in rows:
        try:
            to_arrow([row], schema)
            good.append(row)
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            TypeError,
            ValueError,
            OverflowError,
            ArithmeticError,
        ) as exc:
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


__all__ = [
    "SILVER_ARROW",
    "RawRecord",
    "arrow_schema",
    "candle_row",
    "conform",
    "dead_letter_row",
    "decimal_array",
    "latest_candles",
    "raw_row",
    "to_arrow",
    "to_arrow_lenient",
    "trade_row",
    "trade_row_from_json",
    "trades_table",
]
