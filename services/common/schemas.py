"""The records that cross topics, and their wire encoding.

Wire encoding: one JSON object per Kafka record value (UTF-8, orjson). Every Decimal is
a JSON *string* of plain decimal text ("67000.1", never 6.70001E+4 and never a JSON
number), so no reader anywhere can route money through float. Timestamps are integers,
microseconds since the epoch, UTC. `task bench:codec` (bench/codec.py) measures the codec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any, ClassVar, Literal, Self

import orjson

from services.common.decimals import to_text

Side = Literal["BUY", "SELL"]
SIDES: frozenset[str] = frozenset({"BUY", "SELL"})
TIMEFRAMES: dict[str, int] = {  # name → length in microseconds; windows are aligned to the UTC epoch
    "1m": 60_000_000,
    "5m": 300_000_000,
    "15m": 900_000_000,
    "30m": 1_800_000_000,
    "1h": 3_600_000_000,
    "1d": 86_400_000_000,
}


class SchemaError(ValueError):
    """A record on a topic does not match its schema."""


def _default(value: Any) -> str:
    if isinstance(value, Decimal):
        return to_text(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class _Record:
    """JSON encoding shared by every record type: Decimal fields travel as strings."""

    __slots__ = ()
    _decimal_fields: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def encode(self) -> bytes:
        return orjson.dumps(self, default=_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        try:
            # the common case (exactly the fields) takes a plain copy, cheaper than filtering
            values = dict(data) if len(data) == len(names) else {n: data[n] for n in names if n in data}
            for name in cls._decimal_fields:
                raw = values[name]
                if not isinstance(raw, str):
                    raise SchemaError(f"{cls.__name__}.{name} must be a decimal string, got {raw!r}")
                values[name] = Decimal(raw)
            return cls(**values)
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise SchemaError(f"not a valid {cls.__name__}: {exc}") from exc

    @classmethod
    def decode(cls, payload: bytes | str) -> Self:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.__name__} must be a JSON object")
        return cls.from_dict(data)


@dataclass(slots=True)
class Trade(_Record):
    """A normalized trade (silver). Natural key: (exchange, symbol, trade_id)."""

    exchange: str
    symbol: str  # canonical BASE/QUOTE
    exchange_symbol: str  # as the exchange spells it
    trade_id: str
    exchange_ts: int  # execution time, µs UTC
    received_at: int  # when the feed received the frame, µs UTC
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal  # price × quantity, half-even to 18 places
    side: str  # the taker's side: BUY | SELL
    source_topic: str
    source_partition: int
    source_offset: int

    _decimal_fields: ClassVar[frozenset[str]] = frozenset({"price", "quantity", "quote_quantity"})

    def encode(self) -> bytes:
        """The same bytes as `_Record.encode` (tests/foundation/test_contracts.py checks it), ~1.5x
        faster: the normalizer encodes every trade, and orjson's dataclass walk with a Python
        `default` callback per Decimal was ~13 % of its CPU in a backlog drain."""
        return orjson.dumps(
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "exchange_symbol": self.exchange_symbol,
                "trade_id": self.trade_id,
                "exchange_ts": self.exchange_ts,
                "received_at": self.received_at,
                "price": to_text(self.price),
                "quantity": to_text(self.quantity),
                "quote_quantity": to_text(self.quote_quantity),
                "side": self.side,
                "source_topic": self.source_topic,
                "source_partition": self.source_partition,
                "source_offset": self.source_offset,
            }
        )

    @property
    def key(self) -> str:
        """The Kafka key on market.crypto.trades: <exchange>:<symbol>."""
        return f"{self.exchange}:{self.symbol}"

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.exchange, self.symbol, self.trade_id)


def trade_order_key(exchange_ts: int, trade_id: str) -> tuple[int, int, int | str]:
    """Order of trades inside a candle: (exchange_ts, trade_id), numeric ids compared as numbers.

    open/close are the first/last trade by this key; every service and every
    recomputation must use this one function.
    """
    if trade_id.isdigit():
        return (exchange_ts, 0, int(trade_id))
    return (exchange_ts, 1, trade_id)


def window_start(ts_us: int, timeframe: str) -> int:
    length = TIMEFRAMES[timeframe]
    return ts_us - ts_us % length


@dataclass(slots=True)
class Candle(_Record):
    """An OHLCV candle for (exchange, symbol, timeframe, window_start); window = [start, end)."""

    exchange: str
    symbol: str
    timeframe: str
    window_start: int  # µs UTC, aligned to the epoch
    window_end: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    vwap: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    first_trade_ts: int
    last_trade_ts: int
    revision: int  # 0 for the first final emission, +1 per correction; -1 on the live topic

    _decimal_fields: ClassVar[frozenset[str]] = frozenset(
        {"open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume"}
    )

    @property
    def key(self) -> str:
        """The Kafka key on market.crypto.ohlcv: one compacted entry per candle."""
        return f"{self.exchange}:{self.symbol}:{self.timeframe}:{self.window_start}"

    @property
    def live_key(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.timeframe}"


DLQ_REASONS: dict[str, str] = {
    "malformed_json": "the frame is not JSON, or is truncated",
    "unknown_frame": "valid JSON that is neither a known control frame nor a trade frame",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type or an unparseable value",
    "bad_decimal": "a price or quantity is not a finite decimal that fits decimal(38,18)",
    "bad_price": "price <= 0",
    "bad_quantity": "quantity <= 0",
    "bad_side": "side is not one the exchange defines",
    "ts_future": "exchange_ts is more than 60 s after the frame's received_at",
    "ts_stale": "exchange_ts is more than 7 days before the frame's received_at",
    "unknown_symbol": "the symbol is not in the instrument list",
    "frame_too_large": "the frame exceeds the size the platform accepts",
    "bad_encoding": "the frame is not valid UTF-8",
}


@dataclass(slots=True)
class DeadLetter(_Record):
    """Rejected input, kept with its reason (market.crypto.trades.dlq → silver_dlq)."""

    source_topic: str
    source_partition: int
    source_offset: int
    exchange: str
    received_at: int  # µs UTC
    reason: str  # a key of DLQ_REASONS
    detail: str  # readable explanation
    payload: str  # the offending trade element (JSON text) or the whole frame text
    element_index: int = -1  # index of the bad element inside its frame, -1 for the whole frame

    @property
    def key(self) -> str:
        return self.exchange


@dataclass(slots=True)
class Gap(_Record):
    """A hole in a sequence, or an interval during which a feed connection was down."""

    exchange: str
    scope: str  # "symbol" (trade ids) | "connection" (Coinbase sequence_num, feed disconnects)
    subject: str  # canonical symbol or connection id
    kind: str  # "sequence" | "disconnect"
    expected: int | None  # next id/sequence expected (None for disconnects)
    received: int | None  # what arrived instead
    missing: int  # how many ids are missing (0 when unknown, e.g. a disconnect)
    detected_at: int  # received_at (µs) of the frame that revealed it
    down_from: int | None = None  # disconnect interval, µs
    down_to: int | None = None

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.subject}"
