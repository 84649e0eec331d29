"""Replicas starting together on an EMPTY PostgreSQL catalog: pyiceberg's SqlCatalog creates its own tables
(probe, then CREATE TABLE) and the namespace (check, then INSERT) without atomicity, so the process that
loses either race gets the driver's unique violation. Both races are staged deterministically here: another
transaction holds the same creation uncommitted, ours queues behind it, then collides; it must proceed."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import psycopg2
import sqlalchemy
from pyiceberg.catalog.sql import IcebergNamespaceProperties, SqlCatalogBaseTable

from services.common.catalog import open_catalog
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_TRADES
from services.lakewriter.writer import LakeWriter
from tests.kafka_helpers import wait_for


def lock_waiters(dsn: str, statement: str) -> int:
    """Backends of this database waiting on a lock while running a statement containing `statement`."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            ["%" + statement + "%"],
        )
        return int(cur.fetchone()[0])


async def test_replicas_opening_an_empty_catalog_together(pg_uri: str, tmp_path: Path) -> None:
    settings = K2Settings(data_dir=tmp_path, catalog_uri=pg_uri, warehouse=f"file://{tmp_path / 'warehouse'}")
    dsn = pg_uri.replace("postgresql+psycopg2://", "postgresql://")
    loop = asyncio.get_running_loop()
    other = sqlalchemy.create_engine(pg_uri)
    try:
        # 1. Another replica is creating the catalog tables: our open waits on its CREATE, then collides.
        with other.connect() as conn:
            tx = conn.begin()
            SqlCatalogBaseTable.metadata.create_all(conn)
            opening = loop.run_in_executor(None, open_catalog, settings)
            await wait_for(
                lambda: lock_waiters(dsn, "CREATE TABLE") == 1, timeout=30, message="open to wait on CREATE"
            )
            tx.commit()
        catalog = await opening

        # 2. Another replica is creating the namespace: our insert blocks on its row, then collides.
        with other.connect() as conn:
            tx = conn.begin()
            conn.execute(
                sqlalchemy.insert(IcebergNamespaceProperties).values(
                    catalog_name=catalog.name,
                    namespace=NAMESPACE,
                    property_key="exists",
                    property_value="true",
                )
            )
            ensuring = loop.run_in_executor(None, LakeWriter(catalog).ensure_tables, [SILVER_TRADES])
            await wait_for(
                lambda: lock_waiters(dsn, "INSERT INTO iceberg_namespace_properties") == 1,
                timeout=30,
                message="ensure_tables to wait on the namespace insert",
            )
            tx.commit()
        assert await ensuring == [SILVER_TRADES]
    finally:
        other.dispose()
    assert catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}").current_snapshot() is None
    assert open_catalog(settings).list_namespaces() == [(NAMESPACE,)]
