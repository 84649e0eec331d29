"""The lake writer through an Iceberg REST catalog (Apache Iceberg's own REST fixture server, a real JVM
process): K2_CATALOG_TYPE=rest alone switches it; silver and gold read back exactly through the server."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
from fastapi.testclient import TestClient
from pyiceberg.catalog.rest import RestCatalog

from deploy.iceberg_rest.server import LocalRestCatalog
from services.common.catalog import open_catalog
from services.common.schemas import Candle
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_TRADES, gold_table
from services.common.topics import OHLCV, TRADES
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.offsets import table_offsets
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import LakeWriter, append_trades
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
    price = Decimal(f"3000.{i:02d}{revision}00000000000007")
    return Candle(
        "coinbase", "ETH/USD", "1m", start, start + MINUTE, price, price + 1, price - 1, price + revision,
        Decimal("0.000000000000000009") * (revision + 1), Decimal("99.5"), 2 + revision, price,
        Decimal("1"), Decimal("1"), start + 1, start + 2, revision,
    )  # fmt: skip


async def test_lakewriter_through_rest_catalog(
    fresh_topics: str, k2_env: dict[str, str], rest_catalog: LocalRestCatalog
) -> None:
    env = {
        **k2_env,
        "K2_CATALOG_TYPE": "rest",
        "K2_CATALOG_URI": rest_catalog.uri,
        "K2_WAREHOUSE": rest_catalog.warehouse,
    }
    trades = make_trades(1500, seed=41)
    await produce(fresh_topics, TRADES, trade_records(trades))
    candles = [candle(i, 0) for i in range(8)] + [candle(i, 1) for i in range(3)]
    await produce(fresh_topics, OHLCV, [(c.key.encode(), c.encode(), None) for c in candles])

    catalog = open_catalog(
        K2Settings(catalog_type="rest", catalog_uri=rest_catalog.uri, warehouse=rest_catalog.warehouse)
    )
    assert isinstance(catalog, RestCatalog)
    with writer_process(env, TOPICS="trades,ohlcv", GROUP_ID="lw-rest") as proc:
        proc.wait_http(proc.metrics_url, timeout=120)
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(trades) and count(catalog, gold_table("1m")) >= 8,
            timeout=120,
            message="silver and gold rows through the REST catalog",
        )
        ends = await wait_offsets_recorded(catalog, fresh_topics)

    assert_silver_exactly(catalog, trades)
    latest: dict[int, Candle] = {}
    for c in candles:
        if c.window_start not in latest or c.revision > latest[c.window_start].revision:
            latest[c.window_start] = c
    gold = rows(catalog, gold_table("1m"))
    assert sorted((r["close"], r["volume"], r["revision"]) for r in gold) == sorted(
        (c.close, c.volume, c.revision) for c in latest.values()
    )
    # The server owns the table metadata: its warehouse holds the table and its commits.
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    assert str(rest_catalog.warehouse_dir) in table.metadata_location
    assert "Successfully committed to table market.silver_trades" in rest_catalog.log_file.read_text()

    # The query service over the same REST catalog (it loads each table from the server) answers the same.
    query = QuerySettings(
        data_dir=k2_env["K2_DATA_DIR"],
        catalog_type="rest",
        catalog_uri=rest_catalog.uri,
        warehouse=rest_catalog.warehouse,
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
        ohlcv = export("/v1/ohlcv/1m").to_pylist()
        assert sorted((r["close"], r["volume"]) for r in ohlcv) == sorted(
            (c.close, c.volume) for c in latest.values()
        )

    # One more append (a second file in every partition), then maintenance through the REST catalog:
    # compaction, expiry and orphan removal leave exactly the rows and the recorded offsets.
    extra = make_trades(60, seed=43, start_id=1_000_000)
    append_trades(catalog, extra)
    maintenance = LakewriterSettings(
        catalog_type="rest",
        catalog_uri=rest_catalog.uri,
        warehouse=rest_catalog.warehouse,
        lakewriter_compact_min_files=2,
        lakewriter_expire_keep_days=0,
        lakewriter_expire_keep_last=1,
        lakewriter_orphan_min_age_hours=0,
    )
    report = Maintainer(LakeWriter(open_catalog(maintenance)), maintenance).run([SILVER_TRADES]).tables[0]
    assert report.files_compacted > report.files_written > 0
    assert report.snapshots_expired > 0 and report.orphans_removed > 0
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    assert len(table.metadata.snapshots) == 1
    assert table_offsets(table) == ends
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades + extra
    )
