"""The lake writer with an s3:// warehouse on a real S3 server (S3Proxy, a JVM serving the S3 API over a
local folder): K2_WAREHOUSE=s3://... plus the K2_S3_* settings alone switch it. Data and metadata files go
through S3 requests (none lands in the local warehouse); silver reads back exactly through pyiceberg and
through the query service (DuckDB's httpfs), and maintenance (compaction, expiry, orphan removal) works
on the bucket. The same through Iceberg's REST catalog fixture server, which then writes the table
metadata to the bucket itself (S3FileIO)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from fastapi.testclient import TestClient
from pyarrow import fs as pafs
from pyiceberg.catalog.rest import RestCatalog

from deploy.iceberg_rest.server import LocalRestCatalog, s3_properties
from deploy.s3proxy.server import LocalS3
from services.common.catalog import open_catalog
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_TRADES
from services.common.topics import TRADES
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.offsets import table_offsets
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import LakeWriter, append_trades
from services.query.app import create_app
from services.query.settings import QuerySettings
from tests.catalog.helpers import arrow_export, assert_silver_exactly, wait_offsets_recorded
from tests.kafka_helpers import produce, wait_for
from tests.lakewriter.helpers import (
    count,
    expected_tuple,
    make_trades,
    rows,
    trade_records,
    trade_tuple,
    writer_process,
)

BUCKET = "k2-lake"
WAREHOUSE = f"s3://{BUCKET}/warehouse"


def s3_keys(s3: LocalS3, prefix: str) -> dict[str, int]:
    """Every object under bucket/prefix, as the S3 API lists it: 'bucket/key' → size."""
    infos = s3.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True))
    return {i.path: i.size or 0 for i in infos if i.type == pafs.FileType.File}


async def test_lakewriter_on_s3_warehouse(fresh_topics: str, k2_env: dict[str, str], s3: LocalS3) -> None:
    s3.create_bucket(BUCKET)
    data_dir = Path(k2_env["K2_DATA_DIR"])
    env = {**k2_env, **s3.env(), "K2_WAREHOUSE": WAREHOUSE}
    settings = LakewriterSettings(
        data_dir=data_dir,
        warehouse=WAREHOUSE,
        **s3.settings(),
        lakewriter_compact_min_files=2,
        lakewriter_expire_keep_days=0,
        lakewriter_expire_keep_last=1,
        lakewriter_orphan_min_age_hours=0,
    )
    assert settings.catalog_properties()["s3.endpoint"] == s3.endpoint
    trades = make_trades(1200, seed=51)
    await produce(fresh_topics, TRADES, trade_records(trades))

    catalog = open_catalog(settings)  # SQLite catalog under the data dir, table files in the bucket
    with writer_process(env, TOPICS="trades", GROUP_ID="lw-s3") as proc:
        proc.wait_http(proc.metrics_url, timeout=120)
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(trades),
            timeout=120,
            message="silver rows in the s3:// warehouse",
        )
        ends = await wait_offsets_recorded(catalog, fresh_topics)

    # pyiceberg reads every row back through S3, exactly.
    assert_silver_exactly(catalog, trades)

    # The table's metadata and data files are objects in the bucket (listed through the S3 API), and
    # nothing went to a local warehouse.
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    data_files = [task.file.file_path for task in table.scan().plan_files()]
    assert table.metadata_location.startswith(f"{WAREHOUSE}/")
    assert data_files and all(path.startswith(f"{WAREHOUSE}/") for path in data_files)
    stored = s3_keys(s3, f"{BUCKET}/warehouse")
    for path in [table.metadata_location, *data_files]:
        assert stored.get(path.removeprefix("s3://"), 0) > 0, path
    assert not (data_dir / "warehouse").exists()

    # The query service reads the same files from the bucket (DuckDB's httpfs, the same settings alone).
    query = QuerySettings(
        data_dir=data_dir,
        warehouse=WAREHOUSE,
        **s3.settings(),
        query_rate_limit_per_s=0.0,
        query_refresh_s=0.2,
    )
    with TestClient(create_app(query)) as client:

        def export() -> pa.Table:
            return arrow_export(client, "/v1/trades")

        await wait_for(lambda: export().num_rows == len(trades), timeout=30, message="query reads s3://")
        served = export().to_pylist()
    assert sorted(trade_tuple(r) for r in served) == sorted(expected_tuple(t) for t in trades)
    assert sum(r["price"] for r in served) == sum(t.price for t in trades)

    # One more append (a second file per partition), then maintenance on the bucket: compaction, expiry
    # and orphan removal keep exactly the rows and the recorded offsets, and delete objects from S3.
    extra = make_trades(60, seed=53, start_id=1_000_000)
    append_trades(catalog, extra)
    before = s3_keys(s3, f"{BUCKET}/warehouse")
    report = Maintainer(LakeWriter(open_catalog(settings)), settings).run([SILVER_TRADES]).tables[0]
    assert report.files_compacted > report.files_written > 0
    assert report.snapshots_expired > 0 and report.orphans_removed > 0
    table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
    assert len(table.metadata.snapshots) == 1
    assert table_offsets(table) == ends
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades + extra
    )
    # Orphan removal listed the bucket and deleted exactly what it reports; every live file is still there.
    after = s3_keys(s3, f"{BUCKET}/warehouse")
    assert len(set(before) - set(after)) == report.orphans_removed
    current = [task.file.file_path for task in table.scan().plan_files()]
    assert all(path.removeprefix("s3://") in after for path in [table.metadata_location, *current])


async def test_lakewriter_on_rest_catalog_and_s3(
    fresh_topics: str, k2_env: dict[str, str], s3: LocalS3, tmp_path: Path
) -> None:
    s3.create_bucket(BUCKET)
    props = s3_properties(s3.endpoint, s3.access_key_id, s3.secret_access_key, s3.region)
    with LocalRestCatalog(tmp_path / "iceberg-rest", warehouse=WAREHOUSE, properties=props) as server:
        env = {**k2_env, **s3.env(), "K2_CATALOG_TYPE": "rest", "K2_CATALOG_URI": server.uri}
        env["K2_WAREHOUSE"] = WAREHOUSE
        trades = make_trades(600, seed=57)
        await produce(fresh_topics, TRADES, trade_records(trades))
        settings = K2Settings(
            data_dir=k2_env["K2_DATA_DIR"], catalog_type="rest", catalog_uri=server.uri, warehouse=WAREHOUSE,
            **s3.settings(),
        )  # fmt: skip
        catalog = open_catalog(settings)
        assert isinstance(catalog, RestCatalog)
        with writer_process(env, TOPICS="trades", GROUP_ID="lw-rest-s3") as proc:
            proc.wait_http(proc.metrics_url, timeout=120)
            await wait_for(
                lambda: count(catalog, SILVER_TRADES) >= len(trades),
                timeout=120,
                message="silver rows through the REST catalog in the s3:// warehouse",
            )
        assert_silver_exactly(catalog, trades)
        # The server wrote the metadata file (its S3FileIO), the writer the data files: both in the bucket.
        table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
        assert table.metadata_location.startswith(f"{WAREHOUSE}/")
        assert "Successfully committed to table market.silver_trades" in server.log_file.read_text()
        stored = s3_keys(s3, f"{BUCKET}/warehouse")
        data_files = [task.file.file_path for task in table.scan().plan_files()]
        for path in [table.metadata_location, *data_files]:
            assert stored.get(path.removeprefix("s3://"), 0) > 0, path
        assert not server.warehouse_dir.exists()
