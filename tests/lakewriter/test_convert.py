"""The block decoder of silver (Arrow's JSON reader) agrees with the per-record path, exactly."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from services.common.tables import SILVER_TRADES, TABLES
from services.lakewriter.convert import (
    SILVER_ARROW,
    conform,
    to_arrow,
    to_arrow_lenient,
    trade_row_from_json,
    trades_table,
)
from tests.lakewriter.helpers import make_trades

SCHEMA = TABLES[SILVER_TRADES].schema


def per_record(values: list[bytes]) -> pa.Table:
    return to_arrow([trade_row_from_json(v) for v in values], SCHEMA)


def edited(value: bytes, **changes: object) -> bytes:
    data = orjson.loads(value)
    for key, new in changes.items():
        if new is KeyError:
            del data[key]
        else:
            data[key] = new
    return orjson.dumps(data)


def test_block_equals_the_per_record_path_with_exact_decimals() -> None:
    values = [t.encode() for t in make_trades(400, seed=3)]
    values.append(edited(values[0], trade_id="big", price="99999999999999999999.999999999999999999"))
    values.append(edited(values[0], trade_id="neg", quantity="-0.000000000000000001", extra={"a": [1]}))
    block = trades_table(values)
    assert block is not None
    assert block.schema.equals(SILVER_ARROW)
    assert block.equals(per_record(values))
    assert block.column("price")[400].as_py() == Decimal("99999999999999999999.999999999999999999")
    assert block.column("quantity")[401].as_py() == Decimal("-1E-18")


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"   ",
        b"null",
        b"[1, 2]",
        b'"a string"',
        b"not json",
        b"\xff\xfe",
        "two objects",
        "newline inside",
        {"price": "1e30"},  # Arrow's own cast would silently overflow this
        {"price": "+1"},
        {"price": ".5"},
        {"price": "1.0000000000000000001"},  # 19 fractional digits: must not be rounded
        {"price": "123456789012345678901"},  # 21 integer digits: does not fit
        {"price": 1.5},  # a JSON number: money never goes through float
        {"exchange": 5},
        {"exchange_ts": "1764000000000000"},
        {"exchange_ts": 1.5},
        {"source_partition": 3_000_000_000},
        {"side": None},
        {"trade_id": KeyError},
    ],
)
def test_any_odd_value_sends_the_block_to_the_per_record_path(bad: object) -> None:
    good = [t.encode() for t in make_trades(5, seed=4)]
    if bad == "two objects":
        value = good[0] + b" " + good[1]
    elif bad == "newline inside":
        value = good[0].replace(b",", b",\n", 1)
    elif isinstance(bad, dict):
        value = edited(good[0], **bad)
    else:
        assert isinstance(bad, bytes)
        value = bad
    assert trades_table([*good, value, *good]) is None
    assert trades_table(good) is not None


def test_the_per_record_path_keeps_plain_decimals_and_rejects_what_does_not_fit() -> None:
    good = make_trades(1, seed=5)[0].encode()
    rejected: list[dict[str, object]] = []
    rows = [
        trade_row_from_json(edited(good, trade_id="plus", price="+1")),
        trade_row_from_json(edited(good, trade_id="exp", price="1.5e3")),
        trade_row_from_json(edited(good, trade_id="huge", price="1e30")),
        trade_row_from_json(edited(good, trade_id="long", price="1.0000000000000000001")),
    ]
    table = to_arrow_lenient(rows, SCHEMA, reject=lambda row, exc: rejected.append(row))
    assert table.column("trade_id").to_pylist() == ["plus", "exp"]
    assert table.column("price").to_pylist() == [Decimal(1), Decimal(1500)]
    assert [r["trade_id"] for r in rejected] == ["huge", "long"]


def test_conform_fills_columns_the_table_gained_with_nulls() -> None:
    block = trades_table([t.encode() for t in make_trades(3, seed=6)])
    assert block is not None
    target = SILVER_ARROW.append(pa.field("venue_fee", pa.decimal128(38, 18)))
    wider = conform(block, target)
    assert wider.schema.equals(target)
    assert wider.column("venue_fee").null_count == 3
    assert wider.drop_columns(["venue_fee"]).equals(block)
