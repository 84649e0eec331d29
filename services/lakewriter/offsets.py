"""Kafka offsets kept in Iceberg snapshot summaries (the exactly-once checkpoint).

Every commit carries, in its snapshot summary, the next offset to consume for each topic-partition
whose rows it holds (`k2.offsets` = JSON {topic: {partition: next_offset}}) — only the partitions
of the replica that wrote it. The offset of a partition is therefore found by walking the
current snapshot's ancestry, newest first: the first snapshot that mentions the partition holds
its latest offset, whichever replica wrote it. Maintenance commits (compaction rewrites and the
checkpoint written before snapshot expiry) carry the *complete* map and are marked
`k2.offsets.complete=true`: the walk stops there, and expiring older snapshots loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

SUMMARY_OFFSETS = "k2.offsets"
SUMMARY_COMPLETE = "k2.offsets.complete"
SUMMARY_WRITER = "k2.writer"

TP = tuple[str, int]


def encode(offsets: Mapping[TP, int]) -> str:
    nested: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        nested.setdefault(topic, {})[str(partition)] = int(offset)
    return json.dumps(nested, separators=(",", ":"), sort_keys=True)


def decode(text: str | None) -> dict[TP, int]:
    if not text:
        return {}
    nested = json.loads(text)
    return {
        (topic, int(partition)): int(offset)
        for topic, partitions in nested.items()
        for partition, offset in partitions.items()
    }


def summary_properties(offsets: Mapping[TP, int], writer: str = "", complete: bool = False) -> dict[str, str]:
    props = {SUMMARY_OFFSETS: encode(offsets)}
    if writer:
        props[SUMMARY_WRITER] = writer
    if complete:
        props[SUMMARY_COMPLETE] = "true"
    return props


def snapshot_offsets(snapshot: Snapshot) -> tuple[dict[TP, int], bool]:
    summary = snapshot.summary
    if summary is None:
        return {}, False
    return decode(summary[SUMMARY_OFFSETS]), summary[SUMMARY_COMPLETE] == "true"


class OffsetIndex:
    """Resolves a table's committed offsets, caching the walk per table (snapshot ids are immutable)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, dict[TP, int]]] = {}

    def offsets(self, table: Table, snapshot_id: int | None = None) -> dict[TP, int]:
        """Latest offset per topic-partition as of `snapshot_id` (default: the current snapshot)."""
        metadata = table.metadata
        by_id = {snap.snapshot_id: snap for snap in metadata.snapshots}
        current = by_id.get(snapshot_id) if snapshot_id is not None else metadata.current_snapshot()
        if current is None:
            return {}
        key = str(table.name()) if snapshot_id is None else ""
        cached = self._cache.get(key) if key else None
        found: dict[TP, int] = {}
        snapshot: Snapshot | None = current
        while snapshot is not None:
            if cached is not None and snapshot.snapshot_id == cached[0]:
                for tp, offset in cached[1].items():
                    found.setdefault(tp, offset)
                break
            offsets, complete = snapshot_offsets(snapshot)
            for tp, offset in offsets.items():
                found.setdefault(tp, offset)
            if complete:
                break
            parent = snapshot.parent_snapshot_id
            snapshot = by_id.get(parent) if parent is not None else None
        if key:
            self._cache[key] = (current.snapshot_id, dict(found))
        return found


def table_offsets(table: Table, snapshot_id: int | None = None) -> dict[TP, int]:
    """The committed offsets of a table (uncached convenience for tools and tests)."""
    return OffsetIndex().offsets(table, snapshot_id)
