"""The obviously-correct recomputation of candles from a set of trades (the oracle of the tests)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from services.common.decimals import divide
from services.common.schemas import TIMEFRAMES, Candle, Trade, trade_order_key, window_start


def reference_candles(trades: Iterable[Trade]) -> dict[str, Candle]:
    """Every candle of every timeframe, keyed by Candle.key (revision 0), straight from the definitions."""
    unique = {t.natural_key: t for t in trades}  # the set of trades
    groups: dict[tuple[str, str, str, int], list[Trade]] = defaultdict(list)
    for trade in unique.values():
        for timeframe in TIMEFRAMES:
            groups[
                (trade.exchange, trade.symbol, timeframe, window_start(trade.exchange_ts, timeframe))
            ].append(trade)
    out: dict[str, Candle] = {}
    for (exchange, symbol, timeframe, start), group in groups.items():
        ordered = sorted(group, key=lambda t: trade_order_key(t.exchange_ts, t.trade_id))
        volume = sum((t.quantity for t in group), Decimal(0))
        quote_volume = sum((t.quote_quantity for t in group), Decimal(0))
        candle = Candle(
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            window_start=start,
            window_end=start + TIMEFRAMES[timeframe],
            open=ordered[0].price,
            high=max(t.price for t in group),
            low=min(t.price for t in group),
            close=ordered[-1].price,
            volume=volume,
            quote_volume=quote_volume,
            trade_count=len(group),
            vwap=divide(quote_volume, volume),
            buy_volume=sum((t.quantity for t in group if t.side == "BUY"), Decimal(0)),
            sell_volume=sum((t.quantity for t in group if t.side == "SELL"), Decimal(0)),
            first_trade_ts=min(t.exchange_ts for t in group),
            last_trade_ts=max(t.exchange_ts for t in group),
            revision=0,
        )
        out[candle.key] = candle
    return out


def same_content(a: Candle, b: Candle) -> bool:
    """Equal in every field but the revision."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("revision")
    db.pop("revision")
    return da == db
