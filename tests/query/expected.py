"""The JSON the API must return for known trades and candles (computed in Python, not by the service)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.common.decimals import to_text
from services.common.schemas import Candle, Trade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_us(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trade_json(t: Trade) -> dict:
    return {"exchange": t.exchange, "symbol": t.symbol, "exchange_symbol": t.exchange_symbol,
            "trade_id": t.trade_id, "exchange_ts": iso_us(t.exchange_ts), "received_at": iso_us(t.received_at),
            "price": to_text(t.price), "quantity": to_text(t.quantity), "quote_quantity": to_text(t.quote_quantity),
            "side": t.side, "source_topic": t.source_topic, "source_partition": t.source_partition,
            "source_offset": t.source_offset}


def candle_json(c: Candle) -> dict:
    return {"timeframe": c.timeframe, "exchange": c.exchange, "symbol": c.symbol,
            "window_start": iso_us(c.window_start), "window_end": iso_us(c.window_end),
            "open": to_text(c.open), "high": to_text(c.high), "low": to_text(c.low), "close": to_text(c.close),
            "volume": to_text(c.volume), "quote_volume": to_text(c.quote_volume), "trade_count": c.trade_count,
            "vwap": to_text(c.vwap), "buy_volume": to_text(c.buy_volume), "sell_volume": to_text(c.sell_volume),
            "first_trade_ts": iso_us(c.first_trade_ts), "last_trade_ts": iso_us(c.last_trade_ts),
            "revision": c.revision}


def trade_sort_key(t: Trade) -> tuple:
    return (t.exchange_ts, t.trade_id, t.exchange, t.symbol)


def candle_sort_key(c: Candle) -> tuple:
    return (c.window_start, c.exchange, c.symbol)


def exact(value: str) -> Decimal:
    assert isinstance(value, str), f"decimal {value!r} must travel as a JSON string"
    return Decimal(value)
