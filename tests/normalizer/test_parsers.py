"""The pure parsers: exact values and sides, control frames, one dead letter per bad element."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.instruments import default_instruments
from services.common.schemas import DLQ_REASONS
from services.normalizer.parsers import Lineage, ParseResult, parse_frame
from services.normalizer.parsers.common import rfc3339_us
from services.normalizer.sequences import SequenceTracker
from tests.normalizer.capture import capture, expected_values
from tests.normalizer.frames import (
    BASE_US,
    BINANCE_ACK,
    DROP,
    KRAKEN_CONTROL,
    Quoted,
    binance_trade,
    coinbase_control,
    coinbase_frame,
    coinbase_trade,
    kraken_frame,
    kraken_trade,
)

INSTRUMENTS = default_instruments()
LINEAGE = Lineage("market.crypto.trades.x.raw", 2, 41)
HOUR_US = 3600 * 1_000_000


def parse(exchange: str, frame: bytes, received_us: int = BASE_US) -> ParseResult:
    return parse_frame(exchange, frame, received_us, LINEAGE, INSTRUMENTS)


def test_capture_gives_exactly_the_expected_trades() -> None:
    got = {}
    controls = 0
    for exchange, records in capture().items():
        for _key, frame, _headers in records:
            result = parse(exchange, frame)
            assert result.rejections == []
            controls += result.control is not None
            for t in result.trades:
                assert t.natural_key not in got
                got[t.natural_key] = (t.price, t.quantity, t.quote_quantity, t.side, t.exchange_ts)
                assert t.received_at == BASE_US and t.source_offset == 41 and t.source_partition == 2
    assert controls == 6
    assert got == expected_values()


def test_kraken_numbers_stay_exact_and_every_trade_of_a_frame_is_kept() -> None:
    frame = kraken_frame(
        [
            kraken_trade(1, "0.00012345", "67000.1"),
            kraken_trade(2, "67000.1", "0.1"),
            kraken_trade(3, "1.10", "3"),
        ]
    )
    result = parse("kraken", frame)
    assert [t.trade_id for t in result.trades] == ["1", "2", "3"]
    assert result.trades[0].price == Decimal("0.00012345") and str(result.trades[0].price) == "0.00012345"
    assert result.trades[0].quantity == Decimal("67000.1")
    assert result.trades[1].quote_quantity == Decimal("6700.01")
    assert str(result.trades[2].price) == "1.10"  # digits as sent


def test_sides_per_exchange() -> None:
    assert parse("binance", binance_trade(1, maker=True)).trades[0].side == "SELL"
    assert parse("binance", binance_trade(1, maker=False)).trades[0].side == "BUY"
    assert parse("kraken", kraken_frame([kraken_trade(1, side="sell")])).trades[0].side == "SELL"
    maker_buy = coinbase_frame(1, [[coinbase_trade("1", side="BUY")]])
    assert parse("coinbase", maker_buy).trades[0].side == "SELL"


def test_timestamps_are_microseconds_utc() -> None:
    assert rfc3339_us("1970-01-01T00:00:01.123456789Z") == 1_123_456
    assert rfc3339_us("1970-01-01T01:00:00+01:00") == 0
    assert rfc3339_us("2026-11-26T00:00:00Z") == BASE_US
    assert (
        parse("binance", binance_trade(1, ts_ms=1_795_651_199_999)).trades[0].exchange_ts
        == 1_795_651_199_999_000
    )


@pytest.mark.parametrize(
    "exchange,frame,control",
    [
        ("binance", BINANCE_ACK, "ack"),
        ("binance", b'{"error":{"code":2,"msg":"Invalid request"},"id":3}', "error"),
        ("kraken", KRAKEN_CONTROL[0], "ack"),
        ("kraken", KRAKEN_CONTROL[1], "status"),
        ("kraken", KRAKEN_CONTROL[2], "heartbeat"),
        ("coinbase", coinbase_control(0)[0], "subscriptions"),
        ("coinbase", coinbase_control(0)[1], "heartbeat"),
    ],
)
def test_control_frames_are_recognised(exchange: str, frame: bytes, control: str) -> None:
    result = parse(exchange, frame)
    assert (result.control, result.trades, result.rejections) == (control, [], [])


def _b(**override: object) -> bytes:
    return binance_trade(1, **override)


def _k(**override: object) -> bytes:
    trade = kraken_trade(1)
    trade.update(override)
    return kraken_frame([{k: v for k, v in trade.items() if v is not DROP}])


def _c(**override: object) -> bytes:
    trade = coinbase_trade("1")
    trade.update(override)
    return coinbase_frame(1, [[{k: v for k, v in trade.items() if v is not DROP}]])


FUTURE = BASE_US + 61_000_000
STALE = BASE_US - 7 * 24 * HOUR_US - 1


@pytest.mark.parametrize(
    "exchange,frame,reason",
    [
        ("binance", b'{"stream":"btcusdt@trade","data":{"e":"trade"', "malformed_json"),
        ("kraken", b"hello", "malformed_json"),
        ("coinbase", b"\xff\xfe", "bad_encoding"),
        ("binance", b'{"foo":1}', "unknown_frame"),
        ("kraken", b"[1,2]", "unknown_frame"),
        ("binance", _b(p=DROP), "missing_field"),
        ("binance", _b(t="12"), "wrong_type"),
        ("binance", _b(p="abc"), "bad_decimal"),
        ("binance", _b(p="0"), "bad_price"),
        ("binance", _b(q="-1"), "bad_quantity"),
        ("binance", _b(m="yes"), "bad_side"),
        ("binance", _b(T=FUTURE // 1000), "ts_future"),
        ("binance", _b(T=STALE // 1000), "ts_stale"),
        ("binance", _b(s="FOOBAR"), "unknown_symbol"),
        ("kraken", _k(qty=DROP), "missing_field"),
        ("kraken", _k(price=Quoted("67000.1")), "wrong_type"),
        ("kraken", _k(price="1e-30"), "bad_decimal"),
        ("kraken", _k(price="-5"), "bad_price"),
        ("kraken", _k(qty="0"), "bad_quantity"),
        ("kraken", _k(side="hold"), "bad_side"),
        ("kraken", _k(timestamp="yesterday"), "wrong_type"),
        ("kraken", _k(symbol="BTC/EUR"), "unknown_symbol"),
        ("coinbase", _c(size=DROP), "missing_field"),
        ("coinbase", _c(price=67000), "wrong_type"),
        ("coinbase", _c(price="NaN"), "bad_decimal"),
        ("coinbase", _c(price="0.0"), "bad_price"),
        ("coinbase", _c(size="-0.1"), "bad_quantity"),
        ("coinbase", _c(side="UNKNOWN"), "bad_side"),
        ("coinbase", _c(time="2026-11-26T00:01:01.000000001Z"), "ts_future"),
        ("coinbase", _c(product_id="BTC-EUR"), "unknown_symbol"),
    ],
)
def test_each_rule_gives_its_reason(exchange: str, frame: bytes, reason: str) -> None:
    assert reason in DLQ_REASONS
    result = parse(exchange, frame)
    assert result.trades == []
    assert [r.reason for r in result.rejections] == [reason], result.rejections
    assert result.rejections[0].detail


def test_good_trades_of_a_frame_pass_beside_bad_ones() -> None:
    frame = kraken_frame(
        [kraken_trade(1), kraken_trade(2, price="0"), kraken_trade(3), kraken_trade(4, symbol="FOO/BAR")]
    )
    result = parse("kraken", frame)
    assert [t.trade_id for t in result.trades] == ["1", "3"]
    assert [(r.reason, r.element_index) for r in result.rejections] == [
        ("bad_price", 1),
        ("unknown_symbol", 3),
    ]
    assert '"trade_id":2' in result.rejections[0].payload
    envelope = coinbase_frame(
        5, [[coinbase_trade("1"), coinbase_trade("2", side="X")], [coinbase_trade("3", product="ETH-USD")]]
    )
    result = parse("coinbase", envelope)
    assert [t.trade_id for t in result.trades] == ["1", "3"]
    assert [(r.reason, r.element_index) for r in result.rejections] == [("bad_side", 1)]
    assert result.sequence == 5


def test_timestamps_compare_with_received_at_not_the_wall_clock() -> None:
    old_us = BASE_US - 400 * 24 * HOUR_US  # a frame received 400 days ago replays exactly as it was live
    frame = binance_trade(1, ts_ms=old_us // 1000)
    assert len(parse("binance", frame, received_us=old_us).trades) == 1
    assert parse("binance", frame).rejections[0].reason == "ts_stale"


def test_coinbase_sequence_holes() -> None:
    tracker = SequenceTracker()
    assert tracker.observe(0, "c", 1) is None
    assert tracker.observe(0, "c", 2) is None
    hole = tracker.observe(0, "c", 6)
    assert hole is not None and (hole.expected, hole.received, hole.missing) == (3, 6, 3)
    assert tracker.observe(0, "c", 4) is None  # redelivered: no new gap, expectation kept
    assert tracker.observe(0, "c", 7) is None
    tracker.reset("c")
    assert tracker.observe(0, "c", 1) is None  # a new connection starts again


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
    st.text(alphabet="0123456789", min_size=0, max_size=9),
)
def test_timestamps_agree_with_datetime_arithmetic(start: datetime, offset_min: int, digits: str) -> None:
    """rfc3339_us remembers the seconds of a date and time of day: the seconds, the zone and the
    fraction of each text still count (the same text twice, the next second, another zone)."""
    fraction = f".{digits}" if digits else ""
    micros = int(digits[:6].ljust(6, "0")) if digits else 0
    sign = "+" if offset_min >= 0 else "-"
    offset = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    for wall in (start, start + timedelta(seconds=1)):
        for zone, tz in (("Z", UTC), (offset, timezone(timedelta(minutes=offset_min)))):
            text = wall.replace(microsecond=0).isoformat() + fraction + zone
            aware = wall.replace(microsecond=micros, tzinfo=tz)
            expected = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            assert rfc3339_us(text) == expected, text
            assert rfc3339_us(text) == expected, text
