"""A crafted capture holding every frame kind, with the exact trades it must give."""

from __future__ import annotations

from decimal import Decimal

from tests.normalizer.frames import (
    BASE_NS,
    BASE_US,
    BINANCE_ACK,
    KRAKEN_CONTROL,
    binance_trade,
    coinbase_control,
    coinbase_frame,
    coinbase_trade,
    kraken_frame,
    kraken_trade,
    raw_record,
)

# (exchange, symbol, trade_id) → (price, quantity, quote_quantity, side, exchange_ts)
EXPECTED: dict[tuple[str, str, str], tuple[str, str, str, str, int]] = {
    ("binance", "BTC/USDT", "100"): ("67000.10", "0.00120000", "80.40012", "SELL", BASE_US - 5000),
    ("binance", "BTC/USDT", "101"): ("67000.11", "0.5", "33500.055", "BUY", BASE_US - 4000),
    ("binance", "ETH/USDT", "5000"): ("3500.5", "2", "7001", "BUY", BASE_US - 3000),
    ("kraken", "BTC/USD", "10"): ("67000.1", "0.00012345", "8.271162345", "BUY", BASE_US - 900_001),
    ("kraken", "BTC/USD", "11"): ("67000.2", "1", "67000.2", "SELL", BASE_US - 800_002),
    ("kraken", "BTC/USD", "12"): ("67000.3", "0.1", "6700.03", "SELL", BASE_US - 700_003),
    ("kraken", "ETH/USD", "7"): ("3500.25", "1E-8", "0.0000350025", "BUY", BASE_US - 600_004),
    ("kraken", "BTC/USD", "13"): ("67000", "2.5", "167500", "BUY", BASE_US - 500_005),
    ("coinbase", "BTC/USD", "901"): ("67000.01", "0.5", "33500.005", "SELL", BASE_US - 300_000),
    ("coinbase", "ETH/USD", "902"): ("3500.02", "0.25", "875.005", "BUY", BASE_US - 200_000),
    ("coinbase", "SOL/USD", "903"): ("150.125", "4", "600.5", "BUY", BASE_US - 100_000),
}


def capture() -> dict[str, list]:
    """Raw records per exchange: controls, single and multi-trade frames, mixed-product envelopes."""
    binance = [
        raw_record("cap-b1", 1, BINANCE_ACK),
        raw_record(
            "cap-b1", 2, binance_trade(100, "67000.10", "0.00120000", (BASE_US - 5000) // 1000, maker=True)
        ),
        raw_record("cap-b1", 3, binance_trade(101, "67000.11", "0.5", (BASE_US - 4000) // 1000, maker=False)),
        raw_record(
            "cap-b1",
            4,
            binance_trade(5000, "3500.5", "2", (BASE_US - 3000) // 1000, maker=False, symbol="ETHUSDT"),
        ),
    ]
    kraken = [raw_record("cap-k1", i + 1, frame) for i, frame in enumerate(KRAKEN_CONTROL)]
    kraken += [
        raw_record(
            "cap-k1",
            4,
            kraken_frame(
                [
                    kraken_trade(10, "67000.1", "0.00012345", "buy", BASE_US - 900_001),
                    kraken_trade(11, "67000.2", "1", "sell", BASE_US - 800_002),
                ],
                kind="snapshot",
            ),
        ),
        raw_record(
            "cap-k1",
            5,
            kraken_frame(
                [
                    kraken_trade(12, "67000.3", "0.1", "sell", BASE_US - 700_003),
                    kraken_trade(7, "3500.25", "1e-8", "buy", BASE_US - 600_004, symbol="ETH/USD"),
                    kraken_trade(13, "67000", "2.5", "buy", BASE_US - 500_005),
                ]
            ),
        ),
    ]
    coinbase = [raw_record("cap-c1", i + 1, frame) for i, frame in enumerate(coinbase_control(0))]
    coinbase.append(
        raw_record(
            "cap-c1",
            3,
            coinbase_frame(
                2,
                [
                    [
                        coinbase_trade("901", "BTC-USD", "67000.01", "0.5", "BUY", BASE_US - 300_000),
                        coinbase_trade("902", "ETH-USD", "3500.02", "0.25", "SELL", BASE_US - 200_000),
                    ],
                    [coinbase_trade("903", "SOL-USD", "150.125", "4", "SELL", BASE_US - 100_000)],
                ],
            ),
        )
    )
    return {"binance": binance, "kraken": kraken, "coinbase": coinbase}


def expected_values() -> dict[tuple[str, str, str], tuple[Decimal, Decimal, Decimal, str, int]]:
    return {
        key: (Decimal(p), Decimal(q), Decimal(qq), side, ts) for key, (p, q, qq, side, ts) in EXPECTED.items()
    }


RECEIVED_NS = BASE_NS
