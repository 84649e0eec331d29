"""Stage-1 gap detection: Coinbase `sequence_num` per connection (across all channels).

Raw records are keyed by connection id, so every frame of a connection reaches the same worker
in order. The expectation lives in memory: after a restart or rebalance the first frame of a
connection only sets it (a hole spanning the restart is not reported, never a false one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SequenceHole:
    connection_id: str
    expected: int
    received: int

    @property
    def missing(self) -> int:
        return self.received - self.expected


class SequenceTracker:
    def __init__(self) -> None:
        self._next: dict[tuple[int, str], int] = {}  # (raw partition, connection) → next expected

    def observe(self, partition: int, connection_id: str, sequence: int) -> SequenceHole | None:
        key = (partition, connection_id)
        expected = self._next.get(key)
        if expected is not None and sequence < expected:
            return None  # a redelivered or reordered frame: keep the expectation
        self._next[key] = sequence + 1
        if expected is not None and sequence > expected:
            return SequenceHole(connection_id, expected, sequence)
        return None

    def reset(self, connection_id: str) -> None:
        """A disconnect marker: the connection is gone; forget what it expected."""
        for key in [k for k in self._next if k[1] == connection_id]:
            del self._next[key]

    def drop_partitions(self, partitions: set[int]) -> None:
        for key in [k for k in self._next if k[0] in partitions]:
            del self._next[key]
