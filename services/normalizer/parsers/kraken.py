"""Kraken spot WS v2: `{"channel": "trade", "type": "update"|"snapshot", "data": [trade, ...]}`.

Every trade of a frame is kept (the old K2 kept only the first). Price and qty are JSON numbers,
decoded as Decimal by the exact JSON decoder. `side` is the taker's; timestamps RFC3339 (µs).
Control: subscribe/unsubscribe acks (`"method": ...`), `status` and `heartbeat` channels, pong.
"""

from __future__ import annotations

from decimal import Decimal
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

_SIDES = {"buy": "BUY", "sell": "SELL"}
_CONTROL_CHANNELS = {"status": "status", "heartbeat": "heartbeat"}
_CONTROL_METHODS = {"subscribe", "unsubscribe", "pong", "ping"}


def parse(message: Any, text: str, builder: TradeBuilder) -> ParseResult:
    if not isinstance(message, dict):
        raise Reject("unknown_frame", f"a Kraken frame must be a JSON object, got {type(message).__name__}")
    channel = message.get("channel")
    if channel in _CONTROL_CHANNELS:
        return ParseResult(control=_CONTROL_CHANNELS[channel])
    if message.get("method") in _CONTROL_METHODS:
        return ParseResult(control="ack" if message.get("success", True) is not False else "error")
    if channel != "trade":
        raise Reject("unknown_frame", "neither a Kraken trade nor a control frame")
    data = require(message, "data", list)
    result = ParseResult()
    for index, element in enumerate(data):
        try:
            result.trades.append(_trade(element, builder))
        except Reject as rej:
            result.rejections.append(Rejection(rej.reason, rej.detail, element_text(element), index))
    if not data:
        result.control = "empty"
    return result


def _trade(element: Any, builder: TradeBuilder):
    if not isinstance(element, dict):
        raise Reject("wrong_type", f"a trade must be an object, got {type(element).__name__}")
    native = require(element, "symbol", str)
    side_text = require(element, "side", str)
    price_raw = require(element, "price", (Decimal, int))
    qty_raw = require(element, "qty", (Decimal, int))
    trade_id = require(element, "trade_id", int)
    ts_text = require(element, "timestamp", str)
    exchange_ts = rfc3339_us(ts_text)
    price = to_decimal("price", price_raw)
    quantity = to_decimal("qty", qty_raw)
    side = _SIDES.get(side_text)
    if side is None:
        raise Reject("bad_side", f"side {side_text[:32]!r} is not buy|sell")
    return builder.build(native, str(trade_id), exchange_ts, price, quantity, side)
