"""Known data for the query tests and benchmark (bench.query): deterministic trades and their candles.

Candles come from the one reference recomputation (bench.reference: the contract of services/common,
open/close by trade_order_key, vwap = quote_volume / volume half-even to 18 places), so every
endpoint's answer can be compared with a direct computation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal

from bench.reference import as_candle, recompute_candles
from services.common.decimals import multiply
from services.common.schemas import Candle, Trade
from services.common.topics import TRADES

DAY_US = 86_400_000_000
DAY0_US = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z
MARKETS = (
    ("binance", "BTC/USDT", "BTCUSDT", Decimal("67000")),
    ("binance", "ETH/USDT", "ETHUSDT", Decimal("3500")),
    ("kraken", "BTC/USD", "BTC/USD", Decimal("66900")),
    ("coinbase", "BTC/USD", "BTC-USD", Decimal("66950")),
)


def make_trades(
    per_market: int,
    start_us: int = DAY0_US,
    span_us: int = 36 * 3600 * 1_000_000,
    seed: int = 7,
    id_base: int = 1_000_000,
) -> list[Trade]:
    """per_market trades per market spread over [start, start + span), with same-µs ties."""
    rng = random.Random(seed)
    out: list[Trade] = []
    for exchange, symbol, native, ref in MARKETS:
        ts = start_us
        step = span_us // per_market
        for i in range(per_market):
            if i % 17 != 5:  # every 17th trade shares its predecessor's microsecond
                ts = start_us + i * step + rng.randrange(step)
            price = ref + Decimal(rng.randrange(-50_000, 50_000)) / 100
            qty = Decimal(rng.randrange(1, 500_000)) / Decimal(100_000)
            trade_id = str(id_base + i) if exchange != "coinbase" else f"cb-{id_base + i:08d}"
            out.append(
                Trade(
                    exchange=exchange,
                    symbol=symbol,
                    exchange_symbol=native,
                    trade_id=trade_id,
                    exchange_ts=ts,
                    received_at=ts + 1500,
                    price=price,
                    quantity=qty,
                    quote_quantity=multiply(price, qty),
                    side="BUY" if rng.random() < 0.5 else "SELL",
                    source_topic=TRADES,
                    source_partition=i % 6,
                    source_offset=i,
                )
            )
    return out


def candles_of(trades: Iterable[Trade], timeframe: str, revision: int = 0) -> list[Candle]:
    """The reference candles (bench.reference) of one timeframe, by (exchange, symbol, window_start)."""
    candles = [as_candle(k, f, revision) for k, f in recompute_candles(trades, (timeframe,)).items()]
    return sorted(candles, key=lambda c: (c.exchange, c.symbol, c.window_start))


def revised(candle: Candle) -> Candle:
    """A later revision of a candle with a different close and volume (as a late trade would make)."""
    return replace(
        candle,
        close=candle.close + Decimal("0.01"),
        volume=candle.volume + Decimal("1"),
        trade_count=candle.trade_count + 1,
        revision=candle.revision + 1,
    )
