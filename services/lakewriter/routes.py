"""Which topic feeds which table, and how one Kafka record becomes a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from services.common.schemas import TIMEFRAMES, Candle, DeadLetter, SchemaError
from services.common.tables import SILVER_DLQ, SILVER_TRADES, bronze_table, gold_table
from services.common.topics import OHLCV, RAW_TOPICS, TRADES, TRADES_DLQ
from services.lakewriter.convert import (
    RawRecord,
    candle_row,
    dead_letter_row,
    raw_row,
    trade_row_from_json,
    trades_table,
)

# A decoder returns (table, row) or raises SchemaError/ValueError (the record is rejected).
Decoder = Callable[[Any], tuple[str, dict[str, Any]]]
# A block decoder turns the values of many records (one partition, in order) into one Arrow table for
# the route's single table, or returns None when some value needs the per-record decoder.
BlockDecoder = Callable[[list[bytes | None]], pa.Table | None]


@dataclass(frozen=True)
class Route:
    topic: str
    tables: tuple[str, ...]
    decode: Decoder
    upsert: bool = False
    decode_block: BlockDecoder | None = None


def _trade(record: Any) -> tuple[str, dict[str, Any]]:
    return SILVER_TRADES, trade_row_from_json(record.value)


def _dead(record: Any) -> tuple[str, dict[str, Any]]:
    return SILVER_DLQ, dead_letter_row(DeadLetter.decode(record.value), record.partition, record.offset)


def _candle(record: Any) -> tuple[str, dict[str, Any]]:
    if record.value is None:  # a tombstone on the compacted topic: nothing to write
        raise SchemaError("tombstone")
    candle = Candle.decode(record.value)
    if candle.timeframe not in TIMEFRAMES or candle.revision < 0:
        raise SchemaError(f"not a final candle: timeframe={candle.timeframe} revision={candle.revision}")
    row = candle_row(candle)
    return gold_table(candle.timeframe), row


def _raw(exchange: str) -> Decoder:
    table = bronze_table(exchange)

    def decode(record: Any) -> tuple[str, dict[str, Any]]:
        return table, raw_row(
            RawRecord(
                record.topic,
                record.partition,
                record.offset,
                record.value or b"",
                record.headers,
                record.timestamp or 0,
            )
        )

    return decode


def routes(selection: str = "raw,trades,dlq,ohlcv") -> dict[str, Route]:
    """The routes a writer handles, by topic; `selection` as in K2_LAKEWRITER_TOPICS."""
    wanted = {part.strip() for part in selection.split(",") if part.strip()}
    unknown = wanted - {"raw", "trades", "dlq", "ohlcv"}
    if unknown:
        raise ValueError(f"unknown lakewriter topics selection: {sorted(unknown)}")
    result: dict[str, Route] = {}
    if "raw" in wanted:
        for exchange, topic in RAW_TOPICS.items():
            result[topic] = Route(topic, (bronze_table(exchange),), _raw(exchange))
    if "trades" in wanted:
        result[TRADES] = Route(TRADES, (SILVER_TRADES,), _trade, decode_block=trades_table)
    if "dlq" in wanted:
        result[TRADES_DLQ] = Route(TRADES_DLQ, (SILVER_DLQ,), _dead)
    if "ohlcv" in wanted:
        result[OHLCV] = Route(OHLCV, tuple(gold_table(tf) for tf in TIMEFRAMES), _candle, upsert=True)
    return result


def dedupe_candles(rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows (offset, row) of one gold table → one row per candle key: highest revision, then latest offset."""
    best: dict[tuple[Any, ...], tuple[int, int, dict[str, Any]]] = {}
    for offset, row in rows:
        key = (row["exchange"], row["symbol"], row["window_start"])
        rank = (row["revision"], offset)
        current = best.get(key)
        if current is None or rank >= current[:2]:
            best[key] = (*rank, row)
    return [item[2] for item in best.values()]
