"""Fast paths for the usual trade frames: one msgspec decode into typed structs, instead of a JSON
tree walked and type-checked field by field in Python (a Binance trade frame: 8.9 → 6.0 µs; a
6-trade Coinbase envelope: 46.6 → 40.0 µs).

A fast path answers only for a frame of the usual shape whose every trade is valid; for anything
else (a control frame, an unusual shape, one bad element) it returns None and the exchange's
parser (binance.py, coinbase.py) gives the answer, dead letters and all. The top level of a frame
forbids unknown fields, so a frame that the parser would read as a control frame (Binance `id` +
`result`, Coinbase `type: error`) never takes the fast path. tests/normalizer/test_fast_paths.py
checks on random frames that both give the same result.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.normalizer.parsers.coinbase import TAKER_SIDE
from services.normalizer.parsers.common import ParseResult, Reject, TradeBuilder, rfc3339_us, to_decimal

# orjson (the parsers' decoder for these exchanges) refuses integers outside i64..u64; msgspec takes
# any: the fast paths take i64 only (msgspec's bounds must fit i64) and leave the rest to the parsers
JsonInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _BinanceTrade(msgspec.Struct):
    e: str
    s: str
    t: JsonInt
    p: str
    q: str
    T: JsonInt
    m: bool


class _BinanceStreamFrame(msgspec.Struct, forbid_unknown_fields=True):
    stream: str
    data: _BinanceTrade


class _CoinbaseTrade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _CoinbaseEvent(msgspec.Struct):
    trades: list[_CoinbaseTrade]


class _CoinbaseEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    events: list[_CoinbaseEvent]
    sequence_num: JsonInt
    client_id: str = ""
    timestamp: str = ""


_BINANCE = msgspec.json.Decoder(_BinanceStreamFrame)
_COINBASE = msgspec.json.Decoder(_CoinbaseEnvelope)


def binance(frame: bytes, builder: TradeBuilder) -> ParseResult | None:
    """A combined-stream trade frame `{"stream": …, "data": {…}}` (see binance.py)."""
    try:
        trade = _BINANCE.decode(frame).data
    except (msgspec.DecodeError, ValueError, RecursionError):  # not UTF-8, not JSON, not this shape
        return None
    if trade.e != "trade":
        return None
    try:
        price = to_decimal("p", trade.p)
        quantity = to_decimal("q", trade.q)
        side = "SELL" if trade.m else "BUY"
        return ParseResult(
            trades=[builder.build(trade.s, str(trade.t), trade.T * 1000, price, quantity, side)]
        )
    except Reject:
        return None


def coinbase(frame: bytes, builder: TradeBuilder) -> ParseResult | None:
    """A `market_trades` envelope with at least one trade (see coinbase.py)."""
    try:
        envelope = _COINBASE.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if envelope.channel != "market_trades":
        return None
    trades = []
    try:
        for event in envelope.events:
            for trade in event.trades:
                side = TAKER_SIDE.get(trade.side)
                if not trade.trade_id or side is None:
                    return None
                exchange_ts = rfc3339_us(trade.time)
                price = to_decimal("price", trade.price)
                quantity = to_decimal("size", trade.size)
                trades.append(
                    builder.build(trade.product_id, trade.trade_id, exchange_ts, price, quantity, side)
                )
    except Reject:
        return None
    if not trades:
        return None
    return ParseResult(trades=trades, sequence=envelope.sequence_num)
