"""Arrow → JSON text of a page: exact decimals, UTC times with µs, escaped strings, nulls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pyarrow as pa

from services.common.decimals import to_text
from services.query.jsonrows import json_array_items

DECIMALS = [
    Decimal("67000.1"),
    Decimal("0"),
    Decimal("1E-18"),
    Decimal("0.0000001"),
    Decimal("-0.5"),
    Decimal("100"),
    Decimal("12345678901234567890.123456789012345678"),
    None,
]
TIMES = [0, 1_709_251_200_000_000, -1, 253_402_300_799_999_999, 1_709_251_200_123_456, 5, None, 7]
STRINGS = ["BTC/USDT", 'a"b', "back\\slash", "tab\tnew\nline", "\x01", "ünïcödé ₿", "", None]
INTS = [0, 1, -1, 2**62, None, 42, 7, 9]


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_every_column_kind_round_trips_exactly():
    table = pa.table(
        {
            "price": pa.array(DECIMALS, pa.decimal128(38, 18)),
            "ts": pa.array(TIMES, pa.timestamp("us", tz="UTC")),
            "name": pa.array(STRINGS, pa.string()),
            "n": pa.array(INTS, pa.int64()),
        }
    )
    rows = orjson.loads(b"[" + json_array_items(table) + b"]")
    expected = [
        {"price": None if d is None else to_text(d), "ts": _iso(t), "name": s, "n": n}
        for d, t, s, n in zip(DECIMALS, TIMES, STRINGS, INTS, strict=True)
    ]
    assert rows == expected
    assert rows[2]["price"] == "0.000000000000000001" and rows[1]["price"] == "0"
    assert rows[2]["ts"] == "1969-12-31T23:59:59.999999Z"


def test_column_order_is_kept_and_an_empty_page_is_empty():
    table = pa.table({"b": pa.array([1]), "a": pa.array(["x"])})
    assert json_array_items(table) == b'{"b":1,"a":"x"}'
    assert json_array_items(table.slice(0, 0)) == b""
    sliced = pa.table({"v": pa.array([1, 2, 3, 4])}).slice(1, 2)  # a slice does not start at offset 0
    assert json_array_items(sliced) == b'{"v":2},{"v":3}'
