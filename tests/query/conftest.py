"""Fixtures: a lake written by the real lake-writer code with known data, and the query app over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.query_data import DAY0_US, candles_of, make_trades, revised
from services.common.catalog import open_catalog
from services.common.schemas import Candle, Trade
from services.lakewriter.writer import append_trades, ensure_tables, upsert_candles
from services.query.app import create_app
from services.query.settings import QuerySettings

TIMEFRAMES_WRITTEN = ("1m", "5m", "15m", "30m", "1h", "1d")


@dataclass
class KnownLake:
    """What was written, snapshot by snapshot, so tests can compute every answer directly."""

    data_dir: Path
    batch1: list[Trade]
    batch2: list[Trade]
    trade_snapshots: list[int]
    candles_v0: dict[str, list[Candle]]  # timeframe → candles of the first gold snapshot
    candles_now: dict[str, list[Candle]]  # timeframe → the latest revision of each candle
    gold_snapshots: dict[str, list[int]] = field(default_factory=dict)

    @property
    def trades(self) -> list[Trade]:
        return self.batch1 + self.batch2


def settings_for(data_dir: Path, **overrides) -> QuerySettings:
    values = {"data_dir": data_dir, "query_rate_limit_per_s": 0.0, "query_refresh_s": 0.2, **overrides}
    return QuerySettings(**values)


def build_lake(data_dir: Path, per_market: int = 400) -> KnownLake:
    catalog = open_catalog(QuerySettings(data_dir=data_dir))
    ensure_tables(catalog)
    batch1 = make_trades(per_market)
    batch2 = make_trades(
        per_market // 4,
        start_us=DAY0_US + 36 * 3600 * 1_000_000,
        span_us=6 * 3600 * 1_000_000,
        seed=11,
        id_base=5_000_000,
    )
    snaps = [
        append_trades(catalog, batch1, {0: 1}).snapshot_id,
        append_trades(catalog, batch2, {0: 2}).snapshot_id,
    ]
    candles_v0 = {tf: candles_of(batch1 + batch2, tf) for tf in TIMEFRAMES_WRITTEN}
    gold: dict[str, list[int]] = {}
    for tf, candles in candles_v0.items():
        gold[tf] = [r.snapshot_id for r in upsert_candles(catalog, candles, {0: 1})]
    # Corrections: every 149th 1m candle gets a revision 1 (a new snapshot of gold_ohlcv_1m).
    fixes = [revised(c) for c in candles_v0["1m"][::149]]
    gold["1m"] += [r.snapshot_id for r in upsert_candles(catalog, fixes, {0: 2})]
    fixed = {(c.exchange, c.symbol, c.window_start): c for c in fixes}
    now = dict(candles_v0)
    now["1m"] = [fixed.get((c.exchange, c.symbol, c.window_start), c) for c in candles_v0["1m"]]
    return KnownLake(data_dir, batch1, batch2, snaps, candles_v0, now, gold)


@pytest.fixture(scope="session")
def known_lake(tmp_path_factory: pytest.TempPathFactory) -> KnownLake:
    return build_lake(tmp_path_factory.mktemp("query-lake"))


@pytest.fixture(scope="session")
def client(known_lake: KnownLake) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(known_lake.data_dir))) as test_client:
        yield test_client
