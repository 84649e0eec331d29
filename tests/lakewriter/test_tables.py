"""The Iceberg side without Kafka: offsets in summaries, fencing between replicas, schema evolution,
time travel, compaction, expiry, orphan removal (real SqlCatalog on SQLite in a tmp dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from services.common.catalog import open_catalog
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES, TABLES
from services.common.topics import TRADES
from services.lakewriter.convert import trade_row
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.offsets import table_offsets
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import Batch, LakeWriter, append_trades
from tests.lakewriter.helpers import expected_tuple, make_trades, rows, trade_tuple


@pytest.fixture
def catalog(tmp_path: Path):
    return open_catalog(K2Settings(data_dir=tmp_path / "k2"))


def _batch(trades, tp_offsets, expected=None) -> Batch:
    tp = next(iter(tp_offsets))
    return Batch(
        SILVER_TRADES, rows={tp: [trade_row(t) for t in trades]}, end=dict(tp_offsets), expected=expected
    )


def test_offsets_resolve_across_replicas_and_fence_a_zombie(catalog) -> None:
    a, b = LakeWriter(catalog, writer_id="A"), LakeWriter(catalog, writer_id="B")
    a.ensure_tables([SILVER_TRADES])
    trades = make_trades(60)
    p0, p1 = (TRADES, 0), (TRADES, 1)
    assert a.commit(_batch(trades[:10], {p0: 10}, {p0: None})).rows == 10
    assert b.commit(_batch(trades[10:20], {p1: 7}, {p1: None})).rows == 10
    assert a.commit(_batch(trades[20:30], {p0: 25}, {p0: 10})).rows == 10
    # The latest offset per partition, whichever replica wrote it; each summary holds only its own.
    assert b.offsets(SILVER_TRADES) == {p0: 25, p1: 7}
    summaries = [s.summary for s in a.table(SILVER_TRADES).metadata.snapshots]
    assert [s["k2.writer"] for s in summaries] == ["A", "B", "A"]
    assert '"1"' not in summaries[2]["k2.offsets"]
    # B still believes p0 is at 10 (it owned it before a rebalance): its rows for p0 must not land.
    zombie = b.commit(_batch(trades[30:40], {p0: 25}, {p0: 10}))
    assert zombie.rows == 0 and zombie.fenced == {p0: 25}
    assert len(rows(catalog, SILVER_TRADES)) == 30


def test_conflict_is_retried_after_refresh(catalog) -> None:
    a, b = LakeWriter(catalog, writer_id="A"), LakeWriter(catalog, writer_id="B")
    a.ensure_tables([SILVER_TRADES])
    trades = make_trades(20)
    b.table(SILVER_TRADES)  # B loads the table now...
    a.commit(_batch(trades[:10], {(TRADES, 0): 10}))  # ...A commits: B's metadata is stale
    table = b._tables[SILVER_TRADES]
    tx = table.transaction()
    tx.append(table.scan().to_arrow().slice(0, 0))
    from pyiceberg.exceptions import CommitFailedException

    with pytest.raises(CommitFailedException):  # the stale commit is refused by the catalog
        tx.commit_transaction()
    result = b.commit(_batch(trades[10:], {(TRADES, 1): 10}))  # LakeWriter refreshes and lands
    assert result.rows == 10
    assert len(rows(catalog, SILVER_TRADES)) == 20


def test_schema_evolution_adds_a_column_without_rewriting(catalog, monkeypatch) -> None:
    trades = make_trades(50)
    append_trades(catalog, trades[:25], offsets={0: 25})
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    files_before = {t.file.file_path for t in table.scan().plan_files()}
    spec = TABLES[SILVER_TRADES]
    evolved = Schema(
        *spec.schema.fields,
        NestedField(14, "venue", StringType(), required=False),
        identifier_field_ids=list(spec.schema.identifier_field_ids),
    )
    monkeypatch.setitem(TABLES, SILVER_TRADES, replace(spec, schema=evolved))
    append_trades(catalog, trades[25:], offsets={0: 50})
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    assert "venue" in [f.name for f in table.schema().fields]
    files_after = {t.file.file_path for t in table.scan().plan_files()}
    assert files_before < files_after  # old files untouched, new ones added
    got = rows(catalog, SILVER_TRADES)
    assert len(got) == 50 and all(r["venue"] is None for r in got)
    assert sorted(trade_tuple(r) for r in got) == sorted(expected_tuple(t) for t in trades)


def test_time_travel_returns_the_earlier_rows(catalog) -> None:
    trades = make_trades(40)
    first = append_trades(catalog, trades[:15], offsets={0: 15})
    append_trades(catalog, trades[15:], offsets={0: 40})
    earlier = rows(catalog, SILVER_TRADES, snapshot_id=first.snapshot_id)
    assert sorted(trade_tuple(r) for r in earlier) == sorted(expected_tuple(t) for t in trades[:15])
    assert len(rows(catalog, SILVER_TRADES)) == 40
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    assert table_offsets(table, first.snapshot_id) == {(TRADES, 0): 15}


def _settings(tmp_path: Path, **values) -> LakewriterSettings:
    return LakewriterSettings(data_dir=tmp_path / "k2", **values)


def test_compaction_keeps_results_and_reduces_files(catalog, tmp_path: Path) -> None:
    writer = LakeWriter(catalog, writer_id="A")
    writer.ensure_tables([SILVER_TRADES])
    trades = make_trades(1200)
    for i in range(12):  # 12 small commits, partitions 0 and 1 alternating
        tp = (TRADES, i % 2)
        writer.commit(_batch(trades[i * 100 : (i + 1) * 100], {tp: (i // 2 + 1) * 100}))
    table = writer.table(SILVER_TRADES)
    before_files = len(list(table.scan().plan_files()))
    before_rows = sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES))
    before_offsets = table_offsets(table)
    report = Maintainer(writer, _settings(tmp_path, lakewriter_compact_min_files=2)).run(
        [SILVER_TRADES], expire=False, orphans=False
    )
    table = writer.table(SILVER_TRADES)
    after_files = len(list(table.scan().plan_files()))
    assert report.tables[0].files_compacted == before_files > after_files
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == before_rows
    assert table_offsets(table) == before_offsets == {(TRADES, 0): 600, (TRADES, 1): 600}
    assert table.current_snapshot().summary["k2.offsets.complete"] == "true"


def test_expiry_removes_old_snapshots_and_keeps_offsets(catalog, tmp_path: Path) -> None:
    writer = LakeWriter(catalog, writer_id="A")
    writer.ensure_tables([SILVER_TRADES])
    trades = make_trades(300)
    writer.commit(_batch(trades[:100], {(TRADES, 5): 100}))  # p5 never written again
    for i in range(1, 6):
        writer.commit(_batch(trades[100 + i * 20 : 120 + i * 20], {(TRADES, 0): i * 20}))
    table = writer.table(SILVER_TRADES)
    offsets = table_offsets(table)
    before = sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES))
    settings = _settings(
        tmp_path,
        lakewriter_expire_keep_days=0,
        lakewriter_expire_keep_last=2,
        lakewriter_orphan_min_age_hours=0,
    )
    report = Maintainer(writer, settings).run([SILVER_TRADES], compact=False, orphans=False)
    table = writer.table(SILVER_TRADES)
    assert report.tables[0].snapshots_expired >= 4
    assert len(table.metadata.snapshots) <= 3
    assert report.tables[0].checkpoint  # p5's only carrier was expired: a checkpoint kept it
    assert table_offsets(table) == offsets
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == before


def test_orphan_files_are_removed_and_live_files_kept(catalog, tmp_path: Path) -> None:
    writer = LakeWriter(catalog, writer_id="A")
    writer.ensure_tables([SILVER_TRADES])
    trades = make_trades(200)
    writer.commit(_batch(trades[:100], {(TRADES, 0): 100}))
    table = writer.table(SILVER_TRADES)
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    stray = data_dir / "stray-from-a-crashed-commit.parquet"
    stray.write_bytes(b"PAR1 not referenced")
    old = time.time() - 3 * 3600
    os.utime(stray, (old, old))
    young = data_dir / "commit-in-flight.parquet"
    young.write_bytes(b"PAR1 in flight")
    settings = _settings(tmp_path, lakewriter_orphan_min_age_hours=1)
    report = Maintainer(writer, settings).run([SILVER_TRADES], compact=False, expire=False)
    assert report.tables[0].orphans_removed == 1
    assert not stray.exists() and young.exists()
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades[:100]
    )


def test_maintain_command_reports_what_it_did(tmp_path: Path) -> None:
    catalog = open_catalog(K2Settings(data_dir=tmp_path / "k2"))
    writer = LakeWriter(catalog, writer_id="A")
    writer.ensure_tables([SILVER_TRADES])
    trades = make_trades(300)
    for i in range(6):
        writer.commit(_batch(trades[i * 50 : (i + 1) * 50], {(TRADES, 0): (i + 1) * 50}))
    env = {
        **os.environ,
        "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_LAKEWRITER_COMPACT_MIN_FILES": "2",
        "K2_LAKEWRITER_EXPIRE_KEEP_DAYS": "0",
        "K2_LAKEWRITER_EXPIRE_KEEP_LAST": "1",
        "K2_LAKEWRITER_ORPHAN_MIN_AGE_HOURS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.lakewriter", "maintain", "--json", "--table", SILVER_TRADES],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["tables"][0]
    assert report["table"] == SILVER_TRADES
    assert report["files_compacted"] >= 6 and report["snapshots_expired"] >= 6
    assert report["orphans_removed"] >= 6  # the replaced small files, once no snapshot references them
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    live = {urlparse(task.file.file_path).path for task in table.scan().plan_files()}
    on_disk = {str(path) for path in Path(urlparse(table.location()).path).rglob("*.parquet")}
    assert on_disk == live  # nothing but the current snapshot's files is left (the others expired)
    assert sorted(trade_tuple(r) for r in rows(catalog, SILVER_TRADES)) == sorted(
        expected_tuple(t) for t in trades
    )
    assert table_offsets(catalog.load_table(f"market.{SILVER_TRADES}")) == {(TRADES, 0): 300}
