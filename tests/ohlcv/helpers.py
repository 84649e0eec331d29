"""Shared pieces of the OHLCV tests: trade factory, producing trades, reading candles, the worker."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from services.common.decimals import multiply
from services.common.metrics import free_port
from services.common.schemas import Candle, Trade
from services.common.topics import OHLCV, OHLCV_LIVE, TRADES
from tests.kafka_helpers import produce, read_topic
from tests.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


def trade(
    trade_id: int | str,
    ts_us: int,
    price: str,
    qty: str,
    side: str = "BUY",
    exchange: str = "binance",
    symbol: str = "BTC/USDT",
) -> Trade:
    p, q = Decimal(price), Decimal(qty)
    return Trade(
        exchange=exchange,
        symbol=symbol,
        exchange_symbol=symbol.replace("/", ""),
        trade_id=str(trade_id),
        exchange_ts=ts_us,
        received_at=ts_us + 1000,
        price=p,
        quantity=q,
        quote_quantity=multiply(p, q),
        side=side,
        source_topic="test",
        source_partition=0,
        source_offset=0,
    )


def random_trades(
    rng: random.Random,
    count: int,
    start_us: int,
    span_us: int,
    symbols: Iterable[tuple[str, str]] = (("binance", "BTC/USDT"), ("kraken", "ETH/USD")),
    first_id: int = 1,
) -> list[Trade]:
    symbols = list(symbols)
    out = []
    for i in range(count):
        exchange, symbol = rng.choice(symbols)
        price = f"{rng.randint(60000, 60100)}.{rng.randint(0, 99):02d}"
        qty = f"0.{rng.randint(1, 999999):06d}"
        out.append(
            trade(
                first_id + i,
                start_us + rng.randrange(span_us),
                price,
                qty,
                rng.choice(("BUY", "SELL")),
                exchange,
                symbol,
            )
        )
    return out


async def produce_trades(bootstrap: str, trades: Iterable[Trade]) -> int:
    return await produce(bootstrap, TRADES, ((t.key.encode(), t.encode(), None) for t in trades))


async def read_candles(bootstrap: str, topic: str = OHLCV) -> list[Candle]:
    return [Candle.decode(r.value) for r in await read_topic(bootstrap, topic)]


def latest_revisions(candles: Iterable[Candle]) -> dict[str, Candle]:
    latest: dict[str, Candle] = {}
    for candle in candles:
        if candle.key not in latest or candle.revision >= latest[candle.key].revision:
            latest[candle.key] = candle
    return latest


async def final_candles(bootstrap: str) -> dict[str, Candle]:
    return latest_revisions(await read_candles(bootstrap))


async def live_candles(bootstrap: str) -> list[Candle]:
    return await read_candles(bootstrap, OHLCV_LIVE)


def worker(
    k2_env: dict[str, str], app_id: str | None = None, name: str = "ohlcv", **settings: str
) -> tuple[ServiceProcess, str]:
    """An OHLCV worker process (not started) and its /metrics URL."""
    port = free_port()
    env = {
        **k2_env,
        "PYTHONPATH": str(ROOT),
        "K2_METRICS_PORT": str(port),
        "K2_OHLCV_APP_ID": app_id or f"k2-ohlcv-test-{uuid.uuid4().hex[:6]}",
        "K2_OHLCV_GRACE_SECONDS": "2",
        "K2_OHLCV_IDLE_TIMEOUT_SECONDS": "1",
    }
    env.update({f"K2_OHLCV_{key.upper()}": value for key, value in settings.items()})
    return ServiceProcess("services.ohlcv", env=env, name=name), f"http://127.0.0.1:{port}/metrics"


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of a metric whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total
