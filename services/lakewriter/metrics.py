"""Prometheus metrics of the lake writer (k2_lakewriter_*)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

ROWS = Counter("k2_lakewriter_rows_total", "Rows committed to Iceberg", ["table"])
BYTES = Counter("k2_lakewriter_bytes_total", "Data file bytes committed to Iceberg", ["table"])
COMMIT_SECONDS = Histogram(
    "k2_lakewriter_commit_duration_seconds",
    "Time of one table commit: Arrow build, Parquet write, catalog commit, retries",
    ["table"],
    buckets=LATENCY_BUCKETS,
)
CONFLICTS = Counter(
    "k2_lakewriter_commit_conflicts_total",
    "CommitFailedException from the catalog (another writer committed first)",
    ["table"],
)
RETRIES = Counter("k2_lakewriter_commit_retries_total", "Commit attempts repeated after a refresh", ["table"])
FENCED = Counter(
    "k2_lakewriter_fenced_rows_total",
    "Buffered rows dropped because the table already holds their partition's offsets "
    "(written by another replica); they are re-read from the table's offsets",
    ["table"],
)
FILES_PER_COMMIT = Histogram(
    "k2_lakewriter_commit_files",
    "Data files added per commit",
    ["table"],
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128),
)
SNAPSHOTS = Gauge("k2_lakewriter_table_snapshots", "Snapshots in the table's metadata", ["table"])
LAG = Gauge(
    "k2_lakewriter_lag_records",
    "Records behind the partition's end (last stable offset)",
    ["topic", "partition"],
)
LAST_COMMIT_AGE = Gauge(
    "k2_lakewriter_last_commit_age_seconds",
    "Seconds since this process last committed to the table",
    ["table"],
)
REJECTED = Counter(
    "k2_lakewriter_rejected_total",
    "Input records not written (undecodable, or not representable in the table)",
    ["topic", "reason"],
)
MAINTENANCE = Counter(
    "k2_lakewriter_maintenance_total",
    "Maintenance work done: files_compacted, files_written, snapshots_expired, orphans_removed",
    ["table", "action"],
)
ASSIGNED = Gauge("k2_lakewriter_assigned_partitions", "Input partitions this replica owns now")
