"""Helpers for the lake writer tests: generated input, the writer as a process, reading tables back."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from services.common.metrics import free_port
from services.common.schemas import Trade
from services.common.tables import NAMESPACE
from services.common.topics import RAW_TOPICS
from tests.processes import ServiceProcess, scrape

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
BASE_US = 1_764_000_000_000_000  # 2025-11-24T16:00Z
EXCHANGES = ("binance", "kraken", "coinbase")
SYMBOLS = {
    "binance": ("BTC/USDT", "BTCUSDT"),
    "kraken": ("BTC/USD", "BTC/USD"),
    "coinbase": ("ETH-USD", "ETH-USD"),
}


def make_trades(count: int, seed: int = 1, start_id: int = 0) -> list[Trade]:
    """Trades over two days and three exchanges, prices with up to 18 fractional digits."""
    rng = random.Random(seed)
    trades = []
    for i in range(start_id, start_id + count):
        exchange = EXCHANGES[i % 3]
        symbol, native = SYMBOLS[exchange]
        symbol = "ETH/USD" if exchange == "coinbase" else symbol
        price = Decimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 10**18 - 1):018d}")
        qty = Decimal(f"0.{rng.randint(1, 10**8):08d}")
        ts = BASE_US + rng.randint(0, 2 * DAY_US)
        trades.append(
            Trade(
                exchange,
                symbol,
                native,
                str(i),
                ts,
                ts + 1500,
                price,
                qty,
                (price * qty).quantize(Decimal("1E-18")),
                rng.choice(("BUY", "SELL")),
                RAW_TOPICS[exchange],
                i % 3,
                i,
            )
        )
    return trades


def trade_records(trades: list[Trade]) -> list[tuple[bytes, bytes, None]]:
    return [(t.key.encode(), t.encode(), None) for t in trades]


def writer_process(env: dict[str, str], name: str = "lakewriter", **settings: str) -> ServiceProcess:
    """The writer as a real process; settings are K2_LAKEWRITER_<KEY> overrides (plus K2_ ones)."""
    port = free_port()
    full = {
        **env,
        "K2_METRICS_PORT": str(port),
        "K2_LAKEWRITER_BATCH_SECONDS": "0.5",
        "K2_LAKEWRITER_MAINTAIN_INTERVAL_SECONDS": "0",
        "K2_LAKEWRITER_SESSION_TIMEOUT_MS": "6000",
    }
    for key, value in settings.items():
        full[key if key.startswith("K2_") else f"K2_LAKEWRITER_{key.upper()}"] = value
    proc = ServiceProcess(
        "services.lakewriter", env=full, name=name, log_dir=Path(env["K2_DATA_DIR"]) / "logs"
    )
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    return proc


def rows(catalog: Catalog, table: str, snapshot_id: int | None = None) -> list[dict[str, Any]]:
    try:
        t = catalog.load_table(f"{NAMESPACE}.{table}")
    except NoSuchTableError:
        return []
    if t.current_snapshot() is None:
        return []
    return t.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()


def count(catalog: Catalog, table: str) -> int:
    try:
        t = catalog.load_table(f"{NAMESPACE}.{table}")
    except NoSuchTableError:
        return 0
    snapshot = t.current_snapshot()
    if snapshot is None:
        return 0
    return int(snapshot.summary["total-records"] or 0)


def trade_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    """A silver row as comparable values (µs ints, exact Decimals)."""

    def us(value: Any) -> int:
        return (value - EPOCH) // timedelta(microseconds=1) if isinstance(value, datetime) else int(value)

    return (
        row["exchange"],
        row["symbol"],
        row["exchange_symbol"],
        row["trade_id"],
        us(row["exchange_ts"]),
        us(row["received_at"]),
        Decimal(row["price"]),
        Decimal(row["quantity"]),
        Decimal(row["quote_quantity"]),
        row["side"],
        row["source_topic"],
        row["source_partition"],
        row["source_offset"],
    )


def expected_tuple(t: Trade) -> tuple[Any, ...]:
    return (
        t.exchange,
        t.symbol,
        t.exchange_symbol,
        t.trade_id,
        t.exchange_ts,
        t.received_at,
        t.price,
        t.quantity,
        t.quote_quantity,
        t.side,
        t.source_topic,
        t.source_partition,
        t.source_offset,
    )


def assigned_partitions(proc: ServiceProcess) -> int:
    """The writer's k2_lakewriter_assigned_partitions (0 while it starts or if it died)."""
    try:
        text = scrape(proc.metrics_url)  # type: ignore[attr-defined]
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("k2_lakewriter_assigned_partitions "):
            return int(float(line.split()[1]))
    return 0
