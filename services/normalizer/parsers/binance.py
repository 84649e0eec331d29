"""Binance spot: combined-stream frames `{"stream": "btcusdt@trade", "data": {...}}` (or bare /ws events).

Taker side: `m` (buyer is maker) true → the taker sold (SELL). Trade time `T` is in ms.
Control: the subscribe ack `{"result": null, "id": 1}` and error replies `{"error": {...}, "id": ..}`.
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
    to_decimal,
)


def parse(message: Any, text: str, builder: TradeBuilder) -> ParseResult:
    if not isinstance(message, dict):
        raise Reject("unknown_frame", f"a Binance frame must be a JSON object, got {type(message).__name__}")
    if "id" in message and ("result" in message or "error" in message):
        return ParseResult(control="error" if "error" in message else "ack")
    if "data" in message:
        element = message["data"]
    elif message.get("e") == "trade":
        element = message
    else:
        raise Reject("unknown_frame", "neither a Binance trade nor a control frame")
    result = ParseResult()
    try:
        result.trades.append(_trade(element, builder))
    except Reject as rej:
        payload = text if element is message else element_text(element)
        result.rejections.append(Rejection(rej.reason, rej.detail, payload, 0))
    return result


def _trade(element: Any, builder: TradeBuilder):
    if not isinstance(element, dict):
        raise Reject("wrong_type", f"'data' must be an object, got {type(element).__name__}")
    event = require(element, "e", str)
    if event != "trade":
        raise Reject("unknown_frame", f"event type {event[:32]!r} is not 'trade'")
    native = require(element, "s", str)
    trade_id = require(element, "t", int)
    price_text = require(element, "p", str)
    qty_text = require(element, "q", str)
    trade_ms = require(element, "T", int)
    if "m" not in element:
        raise Reject("missing_field", "field 'm' is missing")
    maker = element["m"]
    if not isinstance(maker, bool):
        raise Reject("bad_side", f"'m' (buyer is maker) must be true or false, got {element_text(maker)}")
    price = to_decimal("p", price_text)
    quantity = to_decimal("q", qty_text)
    return builder.build(native, str(trade_id), trade_ms * 1000, price, quantity, "SELL" if maker else "BUY")
