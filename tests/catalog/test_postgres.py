"""The lake writer on a PostgreSQL SqlCatalog (a real server): bronze, silver, gold and DLQ land exactly,
read back through pyiceberg and through the query service's DuckDB path; racing commits on one table
resolve by the catalog's compare-and-swap (one writer retries), no row lost."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from pyiceberg.catalog.sql import SqlCatalog

from deploy.local.postgres import LocalPostgres, PostgresError
from services.common.catalog import open_catalog
from services.common.raw import RawHeaders
from services.common.schemas import Candle, DeadLetter
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_DLQ, SILVER_TRADES, bronze_table, gold_table
from services.common.topics import OHLCV, RAW_TOPICS, TRADES, TRADES_DLQ
from services.lakewriter.convert import trade_row
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.offsets import table_offsets
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import Batch, LakeWriter
from services.query.app import create_app
from services.query.settings import QuerySettings
from tests.catalog.helpers import arrow_export, assert_silver_exactly, wait_offsets_recorded
from tests.kafka_helpers import produce, wait_for
from tests.lakewriter.helpers import (
    BASE_US,
    count,
    expected_tuple,
    make_trades,
    rows,
    trade_records,
    trade_tuple,
    writer_process,
)

MINUTE = 60_000_000


def candle(i: int, revision: int) -> Candle:
    start = BASE_US - BASE_US % MINUTE + i * MINUTE
    price = Decimal(f"67000.{i:02d}{revision}00000000000001")
    return Candle(
        "binance", "BTC/USDT", "1m", start, start + MINUTE, price, price + 1, price - 1, price + revision,
        Decimal("0.000000000000000003") * (revision + 1), Decimal("150.25"), 3 + revision, price,
        Decimal("1"), Decimal("0.5"), start + 1, start + 2, revision,
    )  # fmt: skip


def catalog_rows(uri: str) -> dict[str, str]:
    """What the PostgreSQL catalog itself holds: table name → metadata location (namespace `market`)."""
    dsn = uri.replace("postgresql+psycopg2://", "postgresql://")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, metadata_location FROM iceberg_tables WHERE table_namespace = %s", [NAMESPACE]
        )
        return dict(cur.fetchall())


def test_missing_binaries_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match=r"install-postgres\.sh"):
        LocalPostgres(bin_dir=tmp_path).start()


async def test_lakewriter_on_postgres(fresh_topics: str, k2_env: dict[str, str], pg_uri: str) -> None:
    data_dir = Path(k2_env["K2_DATA_DIR"])
    warehouse = f"file://{data_dir / 'warehouse'}"
    env = {**k2_env, "K2_CATALOG_URI": pg_uri, "K2_WAREHOUSE": warehouse}

    trades = make_trades(2000, seed=31)
    await produce(fresh_topics, TRADES, trade_records(trades))
    candles = [candle(i, 0) for i in range(12)] + [candle(i, 1) for i in range(4)]
    await produce(fresh_topics, OHLCV, [(c.key.encode(), c.encode(), None) for c in candles])
    frames = [b'{"channel":"trade","price":"67000.123456789012345678"}', b"\xff\xfe not utf-8", b""]
    raw = [
        (b"c1", f, RawHeaders(1_764_000_000_000_000_000 + i, "c1", i + 1).to_kafka())
        for i, f in enumerate(frames)
    ]
    await produce(fresh_topics, RAW_TOPICS["kraken"], raw)
    dead = [
        DeadLetter(RAW_TOPICS["kraken"], 0, i, "kraken", BASE_US + i, "malformed_json", "x", "{", -1)
        for i in range(3)
    ]
    await produce(fresh_topics, TRADES_DLQ, [(b"kraken", d.encode(), None) for d in dead])

    settings = K2Settings(data_dir=data_dir, catalog_uri=pg_uri, warehouse=warehouse)
    catalog = open_catalog(settings)
    assert isinstance(catalog, SqlCatalog) and catalog.engine.dialect.name == "postgresql"
    with writer_process(env, GROUP_ID="lw-postgres") as proc:
        proc.wait_http(proc.metrics_url, timeout=120)
        await wait_for(
            lambda: (
                count(catalog, SILVER_TRADES) >= len(trades)
                and count(catalog, gold_table("1m")) >= 12
                and count(catalog, bronze_table("kraken")) >= len(frames)
                and count(catalog, SILVER_DLQ) >= len(dead)
            ),
            timeout=120,
            message="silver, gold, bronze and dlq rows in the PostgreSQL catalog",
        )
        await wait_offsets_recorded(catalog, fresh_topics)

    # pyiceberg: exact rows and decimals, one visible row per candle (its latest revision).
    assert_silver_exactly(catalog, trades)
    gold = {r["window_start"]: r for r in rows(catalog, gold_table("1m"))}
    latest: dict[int, Candle] = {}
    for c in candles:
        if c.window_start not in latest or c.revision > latest[c.window_start].revision:
            latest[c.window_start] = c
    assert len(gold) == 12
    assert sorted((r["close"], r["volume"], r["revision"]) for r in gold.values()) == sorted(
        (c.close, c.volume, c.revision) for c in latest.values()
    )
    bronze = rows(catalog, bronze_table("kraken"))
    assert sorted(r["frame_bytes"] or r["frame"].encode() for r in bronze) == sorted(frames)
    assert count(catalog, SILVER_DLQ) == len(dead)

    # The tables live in PostgreSQL (no SQLite file under the data dir), where pyiceberg reads them.
    in_pg = catalog_rows(pg_uri)
    assert in_pg[SILVER_TRADES] == catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}").metadata_location
    assert {SILVER_TRADES, SILVER_DLQ, gold_table("1m"), bronze_table("kraken")} <= set(in_pg)
    assert not (data_dir / "catalog.db").exists()

    # The query service (its own catalog connection, DuckDB over the planned files) answers the same.
    query = QuerySettings(
        data_dir=data_dir,
        catalog_uri=pg_uri,
        warehouse=warehouse,
        query_rate_limit_per_s=0.0,
        query_refresh_s=0.2,
    )
    with TestClient(create_app(query)) as client:

        def export(path: str) -> pa.Table:
            return arrow_export(client, path)

        await wait_for(
            lambda: export("/v1/trades").num_rows == len(trades), timeout=30, message="query sees silver"
        )
        served = export("/v1/trades").to_pylist()
        assert sorted(trade_tuple(r) for r in served) == sorted(expected_tuple(t) for t in trades)
        assert sum(r["price"] for r in served) == sum(t.price for t in trades)
        ohlcv = export("/v1/ohlcv/1m").to_pylist()
        assert sorted((r["close"], r["volume"]) for r in ohlcv) == sorted(
            (c.close, c.volume) for c in latest.values()
        )


async def test_racing_commits_resolve_on_postgres(
    postgres: LocalPostgres, pg_uri: str, tmp_path: Path
) -> None:
    """Two writers (two catalog connections) commit to silver_trades at the same moment: both pass their
    checks against the same snapshot, both block on the catalog row (held by a lock here), then race.
    PostgreSQL's row update is the compare-and-swap: one commit wins, the other gets
    CommitFailedException, refreshes and retries. Both batches end up in the table, with both offsets."""
    settings = K2Settings(data_dir=tmp_path, catalog_uri=pg_uri, warehouse=f"file://{tmp_path / 'warehouse'}")
    writers = [LakeWriter(open_catalog(settings, name="k2"), writer_id=f"w{i}") for i in range(2)]
    writers[0].ensure_tables([SILVER_TRADES])
    for writer in writers:
        writer.table(SILVER_TRADES)
    trades = make_trades(400, seed=5)
    batches = [
        Batch(
            SILVER_TRADES,
            rows={(TRADES, p): [trade_row(t) for t in trades[p * 200 : (p + 1) * 200]]},
            end={(TRADES, p): 200},
            expected={(TRADES, p): None},
        )
        for p in range(2)
    ]

    dsn = pg_uri.replace("postgresql+psycopg2://", "postgresql://")
    lock = psycopg2.connect(dsn)
    watch = psycopg2.connect(dsn)
    watch.autocommit = True
    try:
        with lock.cursor() as cur:  # holds the catalog row: both commits queue behind it
            cur.execute("SELECT 1 FROM iceberg_tables WHERE table_name = %s FOR UPDATE", [SILVER_TRADES])
        loop = asyncio.get_running_loop()
        commits = [loop.run_in_executor(None, w.commit, b) for w, b in zip(writers, batches, strict=True)]

        def waiting() -> int:
            with watch.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE iceberg_tables%%'"
                )
                return int(cur.fetchone()[0])

        await wait_for(lambda: waiting() == 2, timeout=30, message="both commits waiting on the catalog row")
        lock.commit()  # release: the two updates race on the same metadata_location
        results = await asyncio.gather(*commits)
    finally:
        lock.close()
        watch.close()

    assert sorted(r.attempts for r in results) == [1, 2]  # exactly one lost the race and retried
    assert all(r.rows == 200 for r in results)
    catalog = open_catalog(settings)
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    assert table_offsets(table) == {(TRADES, 0): 200, (TRADES, 1): 200}
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades
    )
    assert len(table.metadata.snapshots) == 2
    # The loser had written its metadata file before its update failed: one file no metadata log names.
    metadata_dir = Path(urlparse(table.location()).path) / "metadata"
    named = [table.metadata_location, *(entry.metadata_file for entry in table.metadata.metadata_log)]
    lost = {p.name for p in metadata_dir.glob("*.metadata.json")} - {
        Path(urlparse(m).path).name for m in named
    }
    assert len(lost) == 1

    # Maintenance through the same catalog: compaction commits, snapshots expire, orphans (the loser's
    # metadata file among them) go; the rows and the recorded offsets stay exactly as they were.
    maintenance = LakewriterSettings(
        data_dir=tmp_path,
        catalog_uri=pg_uri,
        warehouse=settings.warehouse,
        lakewriter_compact_min_files=2,
        lakewriter_expire_keep_days=0,
        lakewriter_expire_keep_last=1,
        lakewriter_orphan_min_age_hours=0,
    )
    report = Maintainer(LakeWriter(open_catalog(maintenance)), maintenance).run([SILVER_TRADES]).tables[0]
    assert report.files_compacted > report.files_written > 0
    assert report.snapshots_expired == 2
    assert report.orphans_removed > 0 and not (metadata_dir / lost.pop()).exists()
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    assert len(table.metadata.snapshots) == 1
    assert table_offsets(table) == {(TRADES, 0): 200, (TRADES, 1): 200}
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades
    )
