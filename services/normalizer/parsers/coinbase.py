"""Coinbase Advanced Trade: `{"channel": "market_trades", "sequence_num": n, "events": [{"trades": [...]}]}`.

An envelope carries several events and products: every trade is kept. `side` is the MAKER's side,
so the taker side is its opposite. `time` is RFC3339 with up to ns digits (truncated to µs).
`sequence_num` counts every message of a connection across all channels (gap detection upstream).
Control: `subscriptions` and `heartbeats` channels, `{"type": "error"}` replies.
"""

from __future__ import annotations

from typing import Any

from services.normalizer.parsers.common import (
    ParseResult,
    Reject,
    Rejection,
    TradeBuilder,
    element_text,
    require,
    rfc3339_us,
    to_decimal,
)

TAKER_SIDE = {"BUY": "SELL", "SELL": "BUY"}  # maker side → taker side
_CONTROL_CHANNELS = {"subscriptions": "subscriptions", "heartbeats": "heartbeat"}


def parse(message: Any, text: str, builder: TradeBuilder) -> ParseResult:
    if not isinstance(message, dict):
        raise Reject("unknown_frame", f"a Coinbase frame must be a JSON object, got {type(message).__name__}")
    sequence = message.get("sequence_num")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        sequence = None
    channel = message.get("channel")
    if channel in _CONTROL_CHANNELS:
        return ParseResult(control=_CONTROL_CHANNELS[channel], sequence=sequence)
    if message.get("type") == "error":
        return ParseResult(control="error", sequence=sequence)
    if channel != "market_trades":
        raise Reject("unknown_frame", "neither a Coinbase trade envelope nor a control frame")
    result = ParseResult(sequence=sequence)
    events = require(message, "events", list)
    index = 0
    for event in events:
        if not isinstance(event, dict):
            result.rejections.append(
                Rejection("wrong_type", "an event must be an object", element_text(event), index)
            )
            index += 1
            continue
        try:
            trades = require(event, "trades", list)
        except Reject as rej:
            result.rejections.append(
                Rejection(rej.reason, f"event: {rej.detail}", element_text(event), index)
            )
            index += 1
            continue
        for element in trades:
            try:
                result.trades.append(_trade(element, builder))
            except Reject as rej:
                result.rejections.append(Rejection(rej.reason, rej.detail, element_text(element), index))
            index += 1
    if index == 0:
        result.control = "empty"
    return result


def _trade(element: Any, builder: TradeBuilder):
    if not isinstance(element, dict):
        raise Reject("wrong_type", f"a trade must be an object, got {type(element).__name__}")
    trade_id = require(element, "trade_id", str)
    if not trade_id:
        raise Reject("wrong_type", "trade_id is empty")
    native = require(element, "product_id", str)
    price_text = require(element, "price", str)
    size_text = require(element, "size", str)
    maker_side = require(element, "side", str)
    ts_text = require(element, "time", str)
    exchange_ts = rfc3339_us(ts_text)
    price = to_decimal("price", price_text)
    quantity = to_decimal("size", size_text)
    side = TAKER_SIDE.get(maker_side)
    if side is None:
        raise Reject("bad_side", f"side {maker_side[:32]!r} is not BUY|SELL")
    return builder.build(native, trade_id, exchange_ts, price, quantity, side)
