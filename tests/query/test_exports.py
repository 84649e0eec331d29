"""Streamed exports round-trip: Parquet / Arrow read back with exact decimal(38,18), CSV as plain text."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from bench.query_data import DAY0_US
from tests.query.expected import candle_json, candle_sort_key, iso_us, trade_json, trade_sort_key

START, END = "2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z"
MONEY = pa.decimal128(38, 18)


def _read(fmt: str, content: bytes) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(content))
    return ipc.open_stream(content).read_all()


def _as_json_rows(table: pa.Table) -> list[dict]:
    """Native rows → the JSON shape (to compare with the direct computation)."""
    rows = []
    for row in table.to_pylist():
        out = {}
        for key, value in row.items():
            if isinstance(value, Decimal):
                out[key] = format(value.normalize(), "f") if value != 0 else "0"
            elif hasattr(value, "timestamp"):
                out[key] = iso_us(int(value.timestamp()) * 1_000_000 + value.microsecond)
            else:
                out[key] = value
        rows.append(out)
    return rows


def test_trades_export_round_trips_in_every_format(client, known_lake):
    expected = [trade_json(t) for t in sorted(known_lake.trades, key=trade_sort_key)]
    for fmt in ("parquet", "arrow"):
        response = client.get("/v1/trades", params={"start": START, "end": END, "format": fmt})
        assert response.status_code == 200, response.text
        assert response.headers["x-k2-snapshot-id"] == str(known_lake.trade_snapshots[-1])
        table = _read(fmt, response.content)
        assert table.schema.field("price").type == MONEY
        assert table.schema.field("quote_quantity").type == MONEY
        assert pa.types.is_timestamp(table.schema.field("exchange_ts").type)
        assert _as_json_rows(table) == expected, fmt
    response = client.get("/v1/trades", params={"start": START, "end": END, "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    for row in rows:
        for key in ("source_partition", "source_offset"):
            row[key] = int(row[key])
    assert rows == expected


def test_candles_export_round_trips(client, known_lake):
    expected = [
        candle_json(c)
        for c in sorted(known_lake.candles_now["1m"], key=candle_sort_key)
        if c.symbol == "ETH/USDT"
    ]
    for fmt in ("parquet", "arrow"):
        response = client.get(
            "/v1/ohlcv/1m", params={"symbol": "ETH/USDT", "start": START, "end": END, "format": fmt}
        )
        table = _read(fmt, response.content)
        assert table.schema.field("vwap").type == MONEY
        assert _as_json_rows(table) == expected, fmt
    text = client.get(
        "/v1/ohlcv/1m", params={"symbol": "ETH/USDT", "start": START, "end": END, "format": "csv"}
    ).text
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["trade_count"], row["revision"] = int(row["trade_count"]), int(row["revision"])
    assert rows == expected


def test_empty_export_is_still_a_valid_file(client):
    response = client.get(
        "/v1/ohlcv/1h", params={"symbol": "NOPE/USDT", "start": START, "end": END, "format": "parquet"}
    )
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 0 and "close" in table.schema.names


def test_export_before_any_data_uses_the_table_schema(client):
    early = iso_us(DAY0_US - 10 * 86_400_000_000)
    response = client.get("/v1/trades", params={"start": early, "end": START, "format": "arrow"})
    table = ipc.open_stream(response.content).read_all()
    assert table.num_rows == 0 and table.schema.field("price").type == MONEY
