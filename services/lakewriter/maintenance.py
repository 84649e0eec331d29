"""Table maintenance: compact small files, expire snapshots, remove orphan files — and say what was done.

pyiceberg 0.12 has no data-file rewrite and no orphan removal, so both are written here:
- compaction reads one partition's small files and replaces them by target-size files (sorted by the
  table's sort order) in ONE overwrite snapshot: readers see the old files or the new ones, never
  both, and the rows are the same. Its summary carries the table's complete offset map (marked
  complete), so the exactly-once resume walk still finds every partition's latest offset.
- expiry keeps every snapshot younger than N days and the last M. If the snapshots it would remove
  are the only carriers of some partition's latest offset, it first commits an empty checkpoint
  snapshot holding the complete map.
- orphan removal deletes files under the table location that no snapshot or metadata log entry
  references and that are older than a safety margin (commits in flight write files first).
Every commit here is a compare-and-swap; a conflict (a writer committed meanwhile) re-plans and retries.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, PyArrowFileIO, _dataframe_to_data_files
from pyiceberg.table import Table
from sqlalchemy.exc import OperationalError

from services.common.tables import TABLES
from services.lakewriter import metrics
from services.lakewriter.offsets import snapshot_offsets, summary_properties
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import LakeWriter

log = logging.getLogger(__name__)


@dataclass
class TableReport:
    table: str
    partitions_compacted: int = 0
    files_compacted: int = 0
    files_written: int = 0
    snapshots_expired: int = 0
    checkpoint: bool = False
    orphans_removed: int = 0
    orphan_bytes: int = 0

    def any(self) -> bool:
        return bool(self.files_compacted or self.snapshots_expired or self.orphans_removed)


@dataclass
class Report:
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        busy = [t for t in self.tables if t.any()]
        parts = [
            f"{t.table}: compacted {t.files_compacted} file(s) of {t.partitions_compacted} partition(s) "
            f"into {t.files_written}, expired {t.snapshots_expired} snapshot(s)"
            f"{' (after a checkpoint)' if t.checkpoint else ''}, removed {t.orphans_removed} orphan "
            f"file(s) ({t.orphan_bytes} bytes)"
            for t in busy
        ]
        return f"{len(self.tables)} table(s) in {self.seconds:.1f}s; " + ("; ".join(parts) or "nothing to do")

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "tables": [vars(t) for t in self.tables]}


class Maintainer:
    def __init__(self, writer: LakeWriter, settings: LakewriterSettings | None = None) -> None:
        self.writer = writer
        self.settings = settings or LakewriterSettings()

    def run(
        self, tables: list[str] | None = None, compact: bool = True, expire: bool = True, orphans: bool = True
    ) -> Report:
        started = time.monotonic()
        report = Report()
        for name in tables or list(TABLES):
            item = TableReport(name)
            try:
                if compact:
                    self.compact(name, item)
                if expire:
                    self.expire(name, item)
                if orphans:
                    self.remove_orphans(name, item)
            except Exception:
                log.exception("maintenance of %s failed (it will run again next time)", name)
            report.tables.append(item)
            for action in ("files_compacted", "files_written", "snapshots_expired", "orphans_removed"):
                metrics.MAINTENANCE.labels(name, action).inc(getattr(item, action))
        report.seconds = time.monotonic() - started
        return report

    # -- compaction ---------------------------------------------------------------------------------

    def compact(self, name: str, report: TableReport) -> None:
        target = self.settings.lakewriter_target_file_mb * 1024 * 1024
        for attempt in range(self.writer.retries):
            table = self.writer.table(name)
            snapshot = table.current_snapshot()
            if snapshot is None:
                return
            groups: dict[Any, list[Any]] = defaultdict(list)
            for task in table.scan().plan_files():
                if task.file.file_size_in_bytes < target / 2 and not task.delete_files:
                    groups[(task.file.spec_id, task.file.partition)].append(task)
            groups = {k: v for k, v in groups.items() if len(v) >= self.settings.lakewriter_compact_min_files}
            if not groups:
                return
            try:
                written = self._rewrite(table, list(groups.values()))
            except (CommitFailedException, OperationalError):
                metrics.CONFLICTS.labels(name).inc()
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            report.partitions_compacted += len(groups)
            report.files_compacted += sum(len(v) for v in groups.values())
            report.files_written += written
            return
        log.warning("%s: compaction gave up after %d conflicts", name, self.writer.retries)

    def _rewrite(self, table: Table, groups: list[list[Any]]) -> int:
        metadata = table.metadata
        offsets = self.writer.index.offsets(table)
        props = summary_properties(offsets, self.writer.writer_id, complete=True)
        props["k2.operation"] = "compaction"
        sort_names = [metadata.schema().find_field(f.source_id).name for f in table.sort_order().fields]
        tx = table.transaction()
        written = 0
        with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
            for tasks in groups:
                data = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue()).to_table(tasks)
                if sort_names:
                    data = data.sort_by([(n, "ascending") for n in sort_names])
                for task in tasks:
                    rewrite.delete_data_file(task.file)
                for data_file in _dataframe_to_data_files(
                    metadata, data, table.io, write_uuid=rewrite.commit_uuid
                ):
                    rewrite.append_data_file(data_file)
                    written += 1
        self.writer._tables[table.name()[-1]] = tx.commit_transaction()
        return written

    # -- snapshot expiry ----------------------------------------------------------------------------

    def expire(self, name: str, report: TableReport) -> None:
        keep_last = max(1, self.settings.lakewriter_expire_keep_last)
        for attempt in range(self.writer.retries):
            table = self.writer.table(name)
            cutoff = datetime.now(UTC) - timedelta(days=self.settings.lakewriter_expire_keep_days)
            doomed = self._doomed(table, cutoff, keep_last)
            if not doomed:
                return
            try:
                if self._needs_checkpoint(table, doomed):
                    self._checkpoint(table)
                    report.checkpoint = True
                    table = self.writer.table(name)
                    doomed = self._doomed(table, cutoff, keep_last)
                table.maintenance.expire_snapshots().by_ids(sorted(doomed)).commit()
            except (CommitFailedException, OperationalError):
                metrics.CONFLICTS.labels(name).inc()
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            report.snapshots_expired += len(doomed)
            self.writer._tables[name] = table.refresh()
            return

    @staticmethod
    def _doomed(table: Table, cutoff: datetime, keep_last: int) -> set[int]:
        snapshots = sorted(table.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
        cutoff_ms = int(cutoff.timestamp() * 1000)
        protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
        old = snapshots[:-keep_last] if keep_last else snapshots
        return {s.snapshot_id for s in old if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected}

    def _needs_checkpoint(self, table: Table, doomed: set[int]) -> bool:
        """Would the offsets resolved from the surviving snapshots differ from today's?"""
        full = self.writer.index.offsets(table)
        by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
        found: dict[Any, int] = {}
        snapshot = table.metadata.current_snapshot()
        while snapshot is not None and snapshot.snapshot_id not in doomed:
            offsets, complete = snapshot_offsets(snapshot)
            for tp, offset in offsets.items():
                found.setdefault(tp, offset)
            if complete:
                break
            parent = snapshot.parent_snapshot_id
            snapshot = by_id.get(parent) if parent is not None else None
        return found != full

    def _checkpoint(self, table: Table) -> None:
        offsets = self.writer.index.offsets(table)
        props = summary_properties(offsets, self.writer.writer_id, complete=True)
        props["k2.operation"] = "checkpoint"
        from services.lakewriter.convert import arrow_schema

        tx = table.transaction()
        tx.append(pa.Table.from_pylist([], schema=arrow_schema(table.schema())), snapshot_properties=props)
        tx.commit_transaction()

    # -- orphan files -------------------------------------------------------------------------------

    def remove_orphans(self, name: str, report: TableReport) -> None:
        table = self.writer.table(name)
        referenced = _referenced(table)
        fs, root = _filesystem(table)
        min_age = time.time() - self.settings.lakewriter_orphan_min_age_hours * 3600
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        except (FileNotFoundError, OSError):
            return
        for info in infos:
            if info.type != pafs.FileType.File or _norm(info.path) in referenced:
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
            if mtime > min_age:
                continue
            fs.delete_file(info.path)
            report.orphans_removed += 1
            report.orphan_bytes += info.size or 0
        if report.orphans_removed:
            log.info("%s: removed %d orphan file(s)", name, report.orphans_removed)


def _filesystem(table: Table) -> tuple[pafs.FileSystem, str]:
    """The table's own pyarrow filesystem (its FileIO's: an s3:// location gets the catalog's s3.endpoint
    and keys) and the location's path in it; a bare `from_uri` would ask AWS for an s3:// location."""
    if isinstance(table.io, PyArrowFileIO):
        scheme, netloc, path = PyArrowFileIO.parse_location(table.location(), table.io.properties)
        return table.io.fs_by_scheme(scheme, netloc), path
    return pafs.FileSystem.from_uri(table.location())


def _norm(path: str) -> str:
    parsed = urlparse(path)
    return (parsed.netloc + parsed.path) if parsed.scheme else path


def _referenced(table: Table) -> set[str]:
    """Every file the table's metadata reaches: metadata files, manifest lists, manifests, data files."""
    metadata = table.metadata
    refs = {_norm(table.metadata_location)}
    refs |= {_norm(entry.metadata_file) for entry in metadata.metadata_log}
    for stats in (*metadata.statistics, *metadata.partition_statistics):
        refs.add(_norm(stats.statistics_path))
    seen_manifests: set[str] = set()
    for snapshot in metadata.snapshots:
        refs.add(_norm(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            refs.add(_norm(manifest.manifest_path))
            # live entries only: a DELETED entry records a removal; a snapshot that still reads the
            # file lists it as ADDED/EXISTING in its own manifests (else compaction's replaced files
            # would be kept forever)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                refs.add(_norm(entry.data_file.file_path))
    return refs
