"""The JSON the API must return for known trades and candles (computed in Python, not by the service)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.reference import CANDLE_FIELDS
from services.common.decimals import to_text
from services.common.schemas import Candle, Trade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_us(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


TRADE_DECIMALS = ("price", "quantity", "quote_quantity")
CANDLE_DECIMALS = tuple(
    n for n in CANDLE_FIELDS if n not in ("trade_count", "first_trade_ts", "last_trade_ts")
)


def trade_json(t: Trade) -> dict:
    out = {
        "exchange": t.exchange,
        "symbol": t.symbol,
        "exchange_symbol": t.exchange_symbol,
        "trade_id": t.trade_id,
        "exchange_ts": iso_us(t.exchange_ts),
        "received_at": iso_us(t.received_at),
    }
    out.update({name: to_text(getattr(t, name)) for name in TRADE_DECIMALS})
    out.update(
        {
            "side": t.side,
            "source_topic": t.source_topic,
            "source_partition": t.source_partition,
            "source_offset": t.source_offset,
        }
    )
    return out


def candle_json(c: Candle) -> dict:
    out: dict = {
        "timeframe": c.timeframe,
        "exchange": c.exchange,
        "symbol": c.symbol,
        "window_start": iso_us(c.window_start),
        "window_end": iso_us(c.window_end),
    }
    out.update({name: to_text(getattr(c, name)) for name in CANDLE_DECIMALS})
    out.update(
        {
            "trade_count": c.trade_count,
            "first_trade_ts": iso_us(c.first_trade_ts),
            "last_trade_ts": iso_us(c.last_trade_ts),
            "revision": c.revision,
        }
    )
    return out


def trade_sort_key(t: Trade) -> tuple:
    return (t.exchange_ts, t.trade_id, t.exchange, t.symbol)


def candle_sort_key(c: Candle) -> tuple:
    return (c.window_start, c.exchange, c.symbol)


def exact(value: str) -> Decimal:
    assert isinstance(value, str), f"decimal {value!r} must travel as a JSON string"
    return Decimal(value)
