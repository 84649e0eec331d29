"""What every exchange parser shares: exact JSON decoding, RFC3339 → µs, validation → rejections.

Parsers are pure functions of (frame bytes, received_at, lineage, instrument list): no Kafka, no
clock. A replay of last month's frames therefore gives exactly what live gave.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec
import orjson

from services.common.decimals import multiply, parse_decimal
from services.common.instruments import InstrumentList
from services.common.raw import MAX_FRAME_BYTES
from services.common.schemas import Trade

FUTURE_TOLERANCE_US = 60 * 1_000_000
STALE_TOLERANCE_US = 7 * 24 * 3600 * 1_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})\Z"
)


class Reject(Exception):
    """One trade element (or a whole frame) is invalid: carries the DLQ reason code and a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Rejection:
    reason: str  # a key of services.common.schemas.DLQ_REASONS
    detail: str
    payload: str  # the offending element (JSON text) or the whole frame text
    element_index: int = -1


@dataclass(slots=True)
class Lineage:
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class ParseResult:
    """What one frame became: trades, rejections, or a recognised control frame (never nothing)."""

    trades: list[Trade] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    control: str | None = None  # e.g. "ack", "heartbeat", "status", "subscriptions", "error"
    sequence: int | None = None  # Coinbase sequence_num (per connection, all channels)

    @property
    def kind(self) -> str:
        if self.control is not None:
            return "control"
        if self.trades:
            return "trades"
        return "rejected"


# msgspec's JSON decoder hands every non-integer number's text to Decimal (integers stay int, of any
# size; NaN and Infinity are not JSON and are refused): ~2.3x faster than the stdlib's json.loads
# with parse_float=Decimal on a Kraken frame.
_EXACT_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def loads_exact(text: str) -> Any:
    """JSON with every number exact: floats become Decimal (never float), NaN/Infinity are refused."""
    try:
        return _EXACT_DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


def decode_frame(frame: bytes, exact_numbers: bool = True) -> tuple[str, Any]:
    """bytes → (text, JSON value); raises Reject for oversize, non-UTF-8 and non-JSON frames.

    `exact_numbers=False` parses with orjson (several times faster) for protocols that carry every
    price and quantity as a JSON *string* (Binance, Coinbase): a JSON number where a decimal string
    belongs is then a float the parsers refuse as wrong_type, so no float ever becomes a price.
    """
    if len(frame) > MAX_FRAME_BYTES:
        raise Reject("frame_too_large", f"{len(frame)} bytes > {MAX_FRAME_BYTES}")
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("bad_encoding", f"not UTF-8: {exc}") from None
    try:
        return text, (loads_exact(text) if exact_numbers else orjson.loads(text))
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise Reject("malformed_json", f"not JSON: {exc}") from None


def element_text(element: Any) -> str:
    """JSON text of an offending element (decimals rendered as strings) for the dead letter."""
    try:
        return json.dumps(element, default=str, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(element)


def rfc3339_us(text: str) -> int:
    """RFC3339 text → µs since the epoch, UTC; finer digits are truncated. No float anywhere."""
    match = _RFC3339.match(text)
    if match is None:
        raise Reject("wrong_type", f"timestamp {text[:64]!r} is not RFC3339")
    wall = text[:19]  # date and time of day (the pattern's fixed-width start)
    seconds = _wall_seconds.get(wall)
    if seconds is None:
        seconds = _wall_seconds_of(text, match)
        if len(_wall_seconds) >= _WALL_SECONDS_MAX:
            _wall_seconds.clear()
        _wall_seconds[wall] = seconds
    fraction, zone = match.group(7, 8)
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * 1_000_000 + (int(fraction[:6].ljust(6, "0")) if fraction else 0)


# Trades of a frame, and of a symbol within a second, share their date and time of day: the
# conversion of "YYYY-MM-DDTHH:MM:SS" to seconds is remembered (bounded; cleared when full).
_wall_seconds: dict[str, int] = {}
_WALL_SECONDS_MAX = 4096


def _wall_seconds_of(text: str, match: re.Match[str]) -> int:
    """Seconds since the epoch of the date and time of day, as if at UTC; Reject if invalid."""
    year, month, day, hour, minute, second = match.group(1, 2, 3, 4, 5, 6)
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise Reject("wrong_type", f"timestamp {text[:64]!r} is not a valid date") from None
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 60:
        raise Reject("wrong_type", f"timestamp {text[:64]!r} has an invalid time")
    return days * 86400 + h * 3600 + m * 60 + s


def require(element: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """element[name] of the given JSON type (bool is never an int here), else Reject."""
    try:
        value = element[name]
    except KeyError:
        raise Reject("missing_field", f"field {name!r} is missing") from None
    if type(value) is kind:  # the usual case, checked first: exactly the type asked for
        return value
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise Reject("wrong_type", f"field {name!r} must be {_names(kind)}, got bool")
    if not isinstance(value, kind):
        raise Reject("wrong_type", f"field {name!r} must be {_names(kind)}, got {type(value).__name__}")
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return "|".join(
        {
            "str": "string",
            "int": "integer",
            "Decimal": "number",
            "bool": "boolean",
            "dict": "object",
            "list": "array",
        }.get(k.__name__, k.__name__)
        for k in kinds
    )


def to_decimal(name: str, value: str | int | Decimal) -> Decimal:
    """A price/quantity from JSON text or an exact JSON number → Decimal fitting decimal(38,18)."""
    try:
        return parse_decimal(value if isinstance(value, str) else str(value))
    except ValueError as exc:
        raise Reject("bad_decimal", f"{name}: {exc}") from None


@dataclass(slots=True)
class TradeBuilder:
    """Checks the common rules and builds a Trade; one builder per frame."""

    exchange: str
    instruments: InstrumentList
    received_at_us: int
    lineage: Lineage

    def build(
        self, native: str, trade_id: str, exchange_ts: int, price: Decimal, quantity: Decimal, side: str
    ) -> Trade:
        instrument = self.instruments.by_native(self.exchange, native)
        if instrument is None:
            raise Reject("unknown_symbol", f"{self.exchange} symbol {native[:64]!r} is not listed")
        if price <= 0:
            raise Reject("bad_price", f"price {price} <= 0")
        if quantity <= 0:
            raise Reject("bad_quantity", f"quantity {quantity} <= 0")
        if exchange_ts > self.received_at_us + FUTURE_TOLERANCE_US:
            raise Reject(
                "ts_future",
                f"exchange_ts {exchange_ts} is more than 60 s after received_at {self.received_at_us}",
            )
        if exchange_ts < self.received_at_us - STALE_TOLERANCE_US:
            raise Reject(
                "ts_stale",
                f"exchange_ts {exchange_ts} is more than 7 days before received_at {self.received_at_us}",
            )
        try:
            quote = multiply(price, quantity)
        except ArithmeticError as exc:
            raise Reject("bad_decimal", f"price × quantity: {exc}") from None
        if quote.adjusted() >= 20:
            raise Reject("bad_decimal", "price × quantity does not fit decimal(38,18)")
        return Trade(
            exchange=self.exchange,
            symbol=instrument.symbol,
            exchange_symbol=native,
            trade_id=trade_id,
            exchange_ts=exchange_ts,
            received_at=self.received_at_us,
            price=price,
            quantity=quantity,
            quote_quantity=quote,
            side=side,
            source_topic=self.lineage.topic,
            source_partition=self.lineage.partition,
            source_offset=self.lineage.offset,
        )
