"""Pure frame parsers: `parse_frame(exchange, frame, received_at_us, lineage, instruments)` → ParseResult.

Every input ends as trades, a recognised control frame, or dead letters (rejections): never an
exception. No Kafka, no clock here, so the parsers are unit- and property-testable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.common.instruments import InstrumentList
from services.common.raw import MAX_FRAME_BYTES
from services.normalizer.parsers import binance, coinbase, fast, kraken
from services.normalizer.parsers.common import (
    Lineage,
    ParseResult,
    Reject,
    Rejection,
    TradeBuilder,
    decode_frame,
)

__all__ = ["Lineage", "ParseResult", "Rejection", "parse_frame", "parse_generic"]

log = logging.getLogger(__name__)

# Kraken v2 sends prices and quantities as JSON numbers: they need the exact (Decimal) JSON parser.
EXACT_NUMBERS = {"binance": False, "kraken": True, "coinbase": False}

PARSERS: dict[str, Callable[[Any, str, TradeBuilder], ParseResult]] = {
    "binance": binance.parse,
    "kraken": kraken.parse,
    "coinbase": coinbase.parse,
}
# The usual trade frames in one typed decode (fast.py); None from them means "ask the parser".
FAST_PATHS: dict[str, Callable[[bytes, TradeBuilder], ParseResult | None]] = {
    "binance": fast.binance,
    "coinbase": fast.coinbase,
}


def _payload(frame: bytes) -> str:
    return frame.decode("utf-8", errors="replace")


def parse_frame(
    exchange: str, frame: bytes, received_at_us: int, lineage: Lineage, instruments: InstrumentList
) -> ParseResult:
    """Parse one raw frame of `exchange`; never raises."""
    fast_path = FAST_PATHS.get(exchange)
    if fast_path is not None and len(frame) <= MAX_FRAME_BYTES:
        try:
            result = fast_path(frame, TradeBuilder(exchange, instruments, received_at_us, lineage))
        except Exception:  # a fast-path bug: the parser below still answers (and logs its own)
            log.exception("fast path error on %s frame at %s", exchange, lineage)
            result = None
        if result is not None:
            return result
    return parse_generic(exchange, frame, received_at_us, lineage, instruments)


def parse_generic(
    exchange: str, frame: bytes, received_at_us: int, lineage: Lineage, instruments: InstrumentList
) -> ParseResult:
    """parse_frame without the fast paths: the exchange's parser over the JSON tree."""
    try:
        parser = PARSERS[exchange]
    except KeyError:
        return ParseResult(
            rejections=[Rejection("unknown_frame", f"unknown exchange {exchange!r}", _payload(frame)[:4096])]
        )
    try:
        text, message = decode_frame(frame, EXACT_NUMBERS[exchange])
        builder = TradeBuilder(exchange, instruments, received_at_us, lineage)
        return parser(message, text, builder)
    except Reject as rej:
        payload = _payload(frame) if rej.reason != "frame_too_large" else _payload(frame[:4096])
        return ParseResult(rejections=[Rejection(rej.reason, rej.detail, payload)])
    except Exception as exc:  # a parser bug must not crash the worker: dead-letter the frame
        log.exception("parser error on %s frame at %s", exchange, lineage)
        return ParseResult(
            rejections=[Rejection("unknown_frame", f"parser error: {exc!r}", _payload(frame)[:65536])]
        )
