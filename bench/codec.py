"""Encode/decode throughput of the wire schemas (`task bench:codec`).

Measures services.common.schemas Trade and Candle JSON round trips (decimals as strings) and
writes bench-results/codec.json.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

from services.common.decimals import multiply
from services.common.schemas import Candle, Trade


def _rate(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - started)


def main(n: int = 200_000) -> dict[str, float]:
    price, qty = Decimal("67000.1"), Decimal("0.00012345")
    trade = Trade(
        "kraken",
        "BTC/USD",
        "BTC/USD",
        "123456789",
        1_795_000_000_000_000,
        1_795_000_000_100_000,
        price,
        qty,
        multiply(price, qty),
        "BUY",
        "market.crypto.trades.kraken.raw",
        1,
        42,
    )
    candle = Candle(
        "binance",
        "BTC/USDT",
        "1m",
        0,
        60_000_000,
        price,
        price,
        price,
        price,
        qty,
        multiply(price, qty),
        7,
        price,
        qty,
        Decimal(0),
        1,
        2,
        0,
    )
    trade_wire, candle_wire = trade.encode(), candle.encode()
    results = {
        "trade_encode_per_s": _rate(trade.encode, n),
        "trade_decode_per_s": _rate(lambda: Trade.decode(trade_wire), n),
        "candle_encode_per_s": _rate(candle.encode, n),
        "candle_decode_per_s": _rate(lambda: Candle.decode(candle_wire), n),
    }
    print(f"{'measure':<22} {'ops/s':>12} {'µs/op':>8}")
    for name, rate in results.items():
        print(f"{name:<22} {rate:>12,.0f} {1e6 / rate:>8.2f}")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "codec.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
