"""The Iceberg tables of the lake (namespace `market`): schemas, partitioning, sort orders.

Written by services/lakewriter, read by services/query; both import them from here so the
contract lives in one place. Money columns are decimal(38,18); timestamps are µs UTC
(`timestamptz`). Field ids are fixed: evolve a schema by *adding* fields with new ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform
from pyiceberg.types import (
    BinaryType,
    DecimalType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from services.common.instruments import EXCHANGES
from services.common.schemas import TIMEFRAMES

NAMESPACE = "market"
MONEY = DecimalType(38, 18)


def _req(field_id: int, name: str, field_type, doc: str = "") -> NestedField:
    return NestedField(field_id, name, field_type, required=True, doc=doc or None)


def _opt(field_id: int, name: str, field_type, doc: str = "") -> NestedField:
    return NestedField(field_id, name, field_type, required=False, doc=doc or None)


BRONZE_SCHEMA = Schema(
    _req(1, "received_at", TimestamptzType(), "when the feed received the frame (µs UTC)"),
    _req(2, "received_at_ns", LongType(), "the same instant in ns, as the feed recorded it"),
    _req(3, "connection_id", StringType()),
    _req(4, "frame_seq", LongType(), "frame number within the connection"),
    _req(5, "kind", StringType(), "frame | marker"),
    _req(6, "frame", StringType(), "the frame text exactly as received"),
    _req(7, "kafka_topic", StringType()),
    _req(8, "kafka_partition", IntegerType()),
    _req(9, "kafka_offset", LongType()),
    _opt(
        10,
        "frame_bytes",
        BinaryType(),
        "the frame bytes, set only when they are not valid UTF-8 "
        "(`frame` then holds them decoded with U+FFFD replacements)",
    ),
)
BRONZE_PARTITION = PartitionSpec(PartitionField(1, 1000, DayTransform(), "received_day"))

SILVER_TRADES_SCHEMA = Schema(
    _req(1, "exchange", StringType()),
    _req(2, "symbol", StringType(), "canonical BASE/QUOTE"),
    _req(3, "exchange_symbol", StringType()),
    _req(4, "trade_id", StringType()),
    _req(5, "exchange_ts", TimestamptzType(), "execution time (µs UTC)"),
    _req(6, "received_at", TimestamptzType()),
    _req(7, "price", MONEY),
    _req(8, "quantity", MONEY),
    _req(9, "quote_quantity", MONEY),
    _req(10, "side", StringType(), "taker side BUY | SELL"),
    _req(11, "source_topic", StringType()),
    _req(12, "source_partition", IntegerType()),
    _req(13, "source_offset", LongType()),
    identifier_field_ids=[1, 2, 4],
)
SILVER_TRADES_PARTITION = PartitionSpec(
    PartitionField(5, 1000, DayTransform(), "exchange_day"),
    PartitionField(1, 1001, IdentityTransform(), "exchange"),
)
SILVER_TRADES_SORT = SortOrder(SortField(2, IdentityTransform()), SortField(5, IdentityTransform()))

SILVER_DLQ_SCHEMA = Schema(
    _req(1, "received_at", TimestamptzType()),
    _req(2, "exchange", StringType()),
    _req(3, "reason", StringType()),
    _req(4, "detail", StringType()),
    _req(5, "payload", StringType()),
    _req(6, "element_index", IntegerType()),
    _req(7, "source_topic", StringType()),
    _req(8, "source_partition", IntegerType()),
    _req(9, "source_offset", LongType()),
    _req(10, "kafka_partition", IntegerType(), "partition of the DLQ record itself"),
    _req(11, "kafka_offset", LongType(), "offset of the DLQ record itself"),
)
SILVER_DLQ_PARTITION = PartitionSpec(PartitionField(1, 1000, DayTransform(), "received_day"))

GOLD_OHLCV_SCHEMA = Schema(
    _req(1, "exchange", StringType()),
    _req(2, "symbol", StringType()),
    _req(3, "window_start", TimestamptzType()),
    _req(4, "window_end", TimestamptzType()),
    _req(5, "open", MONEY),
    _req(6, "high", MONEY),
    _req(7, "low", MONEY),
    _req(8, "close", MONEY),
    _req(9, "volume", MONEY),
    _req(10, "quote_volume", MONEY),
    _req(11, "trade_count", LongType()),
    _req(12, "vwap", MONEY),
    _req(13, "buy_volume", MONEY),
    _req(14, "sell_volume", MONEY),
    _req(15, "first_trade_ts", TimestamptzType()),
    _req(16, "last_trade_ts", TimestamptzType()),
    _req(17, "revision", IntegerType()),
    identifier_field_ids=[1, 2, 3],
)
GOLD_OHLCV_PARTITION = PartitionSpec(PartitionField(3, 1000, MonthTransform(), "window_month"))
GOLD_OHLCV_SORT = SortOrder(SortField(2, IdentityTransform()), SortField(3, IdentityTransform()))


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: Schema
    partition_spec: PartitionSpec
    sort_order: SortOrder | None = None

    @property
    def identifier(self) -> str:
        return f"{NAMESPACE}.{self.name}"


def bronze_table(exchange: str) -> str:
    return f"bronze_{exchange}_trades"


def gold_table(timeframe: str) -> str:
    return f"gold_ohlcv_{timeframe}"


SILVER_TRADES = "silver_trades"
SILVER_DLQ = "silver_dlq"

TABLES: dict[str, TableSpec] = {
    **{bronze_table(ex): TableSpec(bronze_table(ex), BRONZE_SCHEMA, BRONZE_PARTITION) for ex in EXCHANGES},
    SILVER_TRADES: TableSpec(
        SILVER_TRADES, SILVER_TRADES_SCHEMA, SILVER_TRADES_PARTITION, SILVER_TRADES_SORT
    ),
    SILVER_DLQ: TableSpec(SILVER_DLQ, SILVER_DLQ_SCHEMA, SILVER_DLQ_PARTITION),
    **{
        gold_table(tf): TableSpec(gold_table(tf), GOLD_OHLCV_SCHEMA, GOLD_OHLCV_PARTITION, GOLD_OHLCV_SORT)
        for tf in TIMEFRAMES
    },
}
