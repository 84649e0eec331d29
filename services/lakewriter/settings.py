"""Settings of the lake writer (`K2_LAKEWRITER_*`)."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import K2Settings


class LakewriterSettings(K2Settings):
    """Kafka → Iceberg writer: batching, consumer group, maintenance schedule, test-only fault injection."""

    lakewriter_group_id: str = Field("k2-lakewriter", description="Kafka consumer group of the writers.")
    lakewriter_instance_id: str = Field(
        "",
        description="Static group membership id (group.instance.id): a restarted replica with the same "
        "id gets its partitions back without a rebalance. Empty = dynamic membership.",
    )
    lakewriter_topics: str = Field(
        "raw,trades,dlq,ohlcv",
        description="Which inputs to write, comma-separated: raw (bronze), trades (silver), dlq, "
        "ohlcv (gold).",
    )
    lakewriter_batch_rows: int = Field(
        100_000, description="Commit a table's batch when it holds this many rows (files of several MB)."
    )
    lakewriter_batch_seconds: float = Field(
        5.0, description="Commit a batch at the latest this many seconds after its first record."
    )
    lakewriter_flush_idle_rows: int = Field(
        10_000,
        description="When a poll returns no record (the input paused, or a backlog was just drained), "
        "commit a batch holding at least this many rows at once instead of waiting for "
        "batch_seconds; 0 disables this.",
    )
    lakewriter_idle_commit_seconds: float = Field(
        60.0,
        description="A table that received no rows still records consumed offsets this often "
        "(keeps restarts short, e.g. gold_ohlcv_1d behind the shared ohlcv topic).",
    )
    lakewriter_commit_retries: int = Field(
        20, description="Attempts per commit on CommitFailedException (refresh, re-check offsets, retry)."
    )
    lakewriter_session_timeout_ms: int = Field(
        10_000, description="Kafka consumer session timeout (how fast a dead replica's partitions move)."
    )
    lakewriter_target_file_mb: int = Field(
        64,
        description="Target on-disk size of data files written by compaction (MB); files under "
        "half of it are `small`.",
    )
    lakewriter_compact_min_files: int = Field(
        4, description="Compact a partition when it has at least this many files smaller than the target."
    )
    lakewriter_expire_keep_days: float = Field(
        0.25,
        description="Snapshot expiry keeps every snapshot younger than this many days (the time-travel "
        "window; a streaming writer commits every few seconds, so keep it short) ...",
    )
    lakewriter_expire_keep_last: int = Field(
        100, description="... and at least the last this many snapshots."
    )
    lakewriter_orphan_min_age_hours: float = Field(
        24.0,
        description="Orphan-file removal only deletes unreferenced files older than this "
        "(safety margin for commits in flight).",
    )
    lakewriter_maintain_interval_seconds: float = Field(
        900.0,
        description="Run maintenance (compact, expire, remove orphans) inside the service "
        "this often; 0 disables it.",
    )
    lakewriter_fault: str = Field(
        "",
        description="TEST ONLY: crash or pause at named points of the commit path, e.g. "
        "`before_catalog_commit:0.1,after_catalog_commit:0.1,pause_before_catalog_commit:0.05`.",
    )
