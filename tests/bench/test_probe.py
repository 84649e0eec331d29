"""The silver-visibility bookkeeping of the latency probe (pure logic, no broker)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from bench.probe import SUMMARY_OFFSETS, LatencyProbe
from services.common.topics import TRADES


def snapshot(snapshot_id: int, ts_ms: int, offsets: dict[str, int]) -> SimpleNamespace:
    summary = {SUMMARY_OFFSETS: json.dumps({TRADES: offsets})}
    return SimpleNamespace(snapshot_id=snapshot_id, timestamp_ms=ts_ms, summary=summary)


def table(*snapshots: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(snapshots=list(snapshots)))


def test_a_trade_is_visible_from_the_first_snapshot_covering_its_offset() -> None:
    probe = LatencyProbe("unused:1", catalog_factory=lambda: None)
    probe._pending[0] = [(10, 1_000_000), (11, 1_500_000), (20, 2_000_000)]
    probe._scan_snapshots(table(snapshot(1, 3_000, {"0": 12})))  # covers offsets < 12
    assert sorted(probe.silver) == [1.5, 2.0]
    assert probe._pending[0] == [(20, 2_000_000)]
    # a trade the probe reads only after the covering snapshot was scanned still gets that snapshot's time
    probe._pending[0].append((5, 500_000))
    probe._scan_snapshots(table(snapshot(1, 3_000, {"0": 12}), snapshot(2, 9_000, {"0": 21})))
    assert sorted(probe.silver) == [1.5, 2.0, 2.5, 7.0]
    assert probe._pending[0] == []


def test_snapshots_without_offsets_or_for_other_partitions_release_nothing() -> None:
    probe = LatencyProbe("unused:1", catalog_factory=lambda: None)
    probe._pending[1] = [(3, 0)]
    bare = SimpleNamespace(snapshot_id=7, timestamp_ms=1, summary={})
    probe._scan_snapshots(table(bare, snapshot(8, 2, {"0": 100})))
    assert probe.silver == []
    assert probe._pending[1] == [(3, 0)]
