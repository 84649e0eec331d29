"""Property: no input crashes the parser; every input ends as trades, a control frame, or dead letters."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.instruments import default_instruments
from services.common.raw import RawHeaders
from services.common.schemas import DLQ_REASONS, DeadLetter
from services.common.topics import GAPS, TRADES_DLQ, TRADES_PARSED
from services.normalizer.parsers import Lineage, parse_frame
from services.normalizer.processor import ParseProcessor
from tests.normalizer.frames import BASE_NS, BASE_US
from tests.normalizer.helpers import delivered, forwards

INSTRUMENTS = default_instruments()
LINEAGE = Lineage("t", 0, 0)
BASE_MS = BASE_US // 1000
EXCHANGES = st.sampled_from(["binance", "kraken", "coinbase"])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=12),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(
        [
            "BTCUSDT",
            "BTC/USD",
            "BTC-USD",
            "buy",
            "SELL",
            "trade",
            "2026-11-26T00:00:00.123456Z",
            "67000.1",
            "0",
            "-1",
        ]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "e",
                    "s",
                    "t",
                    "p",
                    "q",
                    "T",
                    "m",
                    "data",
                    "stream",
                    "channel",
                    "type",
                    "symbol",
                    "side",
                    "price",
                    "qty",
                    "trade_id",
                    "timestamp",
                    "events",
                    "trades",
                    "product_id",
                    "size",
                    "time",
                    "sequence_num",
                    "result",
                    "id",
                    "method",
                    "success",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=8,
        ),
    ),
    max_leaves=30,
)


def _trade_like(exchange: str) -> st.SearchStrategy[bytes]:
    """Frames shaped like real trade frames with every field fuzzed: the interesting paths."""
    field = json_scalars
    if exchange == "binance":
        data = st.fixed_dictionaries(
            {
                "e": st.just("trade") | field,
                "s": st.just("BTCUSDT") | field,
                "t": st.integers() | field,
                "p": field,
                "q": field,
                "T": st.integers(BASE_MS - 10**9, BASE_MS + 10**9) | field,
                "m": st.booleans() | field,
            }
        )
        return data.map(lambda d: json.dumps({"stream": "x", "data": d}).encode())
    if exchange == "kraken":
        trade = st.fixed_dictionaries(
            {
                "symbol": st.just("BTC/USD") | field,
                "side": st.just("buy") | field,
                "price": st.integers(-5, 10**6) | field,
                "qty": field,
                "trade_id": st.integers() | field,
                "timestamp": field,
            }
        )
        return st.lists(trade | json_values, max_size=4).map(
            lambda ts: json.dumps({"channel": "trade", "type": "update", "data": ts}).encode()
        )
    trade = st.fixed_dictionaries(
        {
            "trade_id": field,
            "product_id": st.just("BTC-USD") | field,
            "price": field,
            "size": field,
            "side": st.just("BUY") | field,
            "time": field,
        }
    )
    events = st.lists(
        st.fixed_dictionaries({"trades": st.lists(trade | json_values, max_size=3)}) | json_values, max_size=3
    )
    return events.map(
        lambda ev: json.dumps({"channel": "market_trades", "sequence_num": 1, "events": ev}).encode()
    )


frames = st.one_of(
    st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), EXCHANGES.flatmap(_trade_like)
)


def _check(exchange: str, frame: bytes) -> None:
    result = parse_frame(exchange, frame, BASE_US, LINEAGE, INSTRUMENTS)
    assert result.trades or result.control is not None or result.rejections
    for rejection in result.rejections:
        assert rejection.reason in DLQ_REASONS and rejection.detail
    for trade in result.trades:
        assert trade.price > 0 and trade.quantity > 0 and trade.side in ("BUY", "SELL")
        assert abs(trade.exchange_ts - BASE_US) <= 7 * 24 * 3600 * 1_000_000
        trade.encode()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchange=EXCHANGES, frame=frames)
def test_parser_never_crashes_and_classifies_every_frame(exchange: str, frame: bytes) -> None:
    _check(exchange, frame)


@settings(max_examples=200, deadline=None)
@given(
    exchange=EXCHANGES,
    frame=frames,
    headers=st.lists(
        st.tuples(
            st.sampled_from(["received_at", "connection_id", "seq", "k2_kind", "x"]), st.binary(max_size=12)
        ),
        max_size=5,
    ),
    marker=st.booleans(),
)
def test_stage_one_never_crashes_on_any_record(
    exchange: str, frame: bytes, headers: list, marker: bool
) -> None:
    """Whole stage 1 (headers, markers included): every record ends as outputs or a control frame."""
    stage = ParseProcessor(INSTRUMENTS)
    if marker:
        headers = RawHeaders(BASE_NS, "c", 1, "marker").to_kafka()
    topic = f"market.crypto.trades.{exchange}.raw"
    record = ConsumerRecord(topic, 0, 7, BASE_MS, 0, b"c", frame, None, 1, len(frame), headers)
    sent = stage.process([record])
    assert {topic for topic, *_ in sent} == ({TRADES_PARSED} if sent else set())
    places = [(f["offset"], f["slot"]) for f in forwards(sent)]
    assert len(places) == len(set(places)) and all(offset == 7 for offset, _ in places)  # no repeat
    outputs = delivered(sent)
    assert {topic for topic, *_ in outputs} <= {TRADES_PARSED, TRADES_DLQ, GAPS}
    try:
        RawHeaders.from_kafka(headers)
    except ValueError:
        reasons = [(t, DeadLetter.decode(v).reason) for t, _k, v in outputs]
        assert reasons == [(TRADES_DLQ, "missing_field")]
        return
    if marker:
        assert len(outputs) == 1  # a disconnect gap, or a dead letter for a bad marker
    elif not outputs:
        assert parse_frame(exchange, frame, BASE_US, LINEAGE, INSTRUMENTS).control is not None
