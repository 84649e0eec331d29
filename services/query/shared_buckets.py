"""Per-principal token buckets shared by every worker process of one service instance.

With several uvicorn worker processes a per-process bucket would multiply a key's limit by the
number of processes (and a client's connections land on any of them). The buckets therefore live in
one memory-mapped file that all workers map: a fixed table of slots (fingerprint, tokens, last refill
time), open addressing over a few probes, guarded by an exclusive `flock` held for a few microseconds
per request. `time.monotonic()` is the system-wide CLOCK_MONOTONIC on Linux, so refill times agree
across processes. When every probed slot is taken, the longest-idle principal is evicted (it restarts
with a full burst, as the in-process buckets do when they are cleared).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path

# Set by the multi-process supervisor (services.query.workers) for its workers: a private directory
# holding the buckets file and prometheus_client's multiprocess files.
SHARED_DIR_ENV = "_K2_QUERY_SHARED_DIR"
_RECORD = struct.Struct("<Qdd")  # fingerprint (0 = empty), tokens, last refill (monotonic seconds)


class SharedTokenBuckets:
    """Same contract as security.TokenBuckets.take, but the state is in a file every process maps."""

    def __init__(self, path: Path, rate: float, burst: int, slots: int = 8192, probes: int = 8) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.slots = slots
        self.probes = probes
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = slots * _RECORD.size
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # new bytes read as zero: every slot empty
        self._map = mmap.mmap(self._fd, size)

    def take(self, principal: str) -> float:
        """0 if the request may go; otherwise the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        fingerprint = int.from_bytes(hashlib.sha256(principal.encode()).digest()[:8], "little") or 1
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            offset, tokens, last = self._slot(fingerprint, now)
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                _RECORD.pack_into(self._map, offset, fingerprint, tokens - 1.0, now)
                return 0.0
            _RECORD.pack_into(self._map, offset, fingerprint, tokens, now)
            return (1.0 - tokens) / self.rate
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, fingerprint: int, now: float) -> tuple[int, float, float]:
        """(offset, tokens, last) of the principal's slot; a new principal starts with a full burst."""
        idle_offset, idle_last = -1, float("inf")
        for i in range(self.probes):
            offset = ((fingerprint + i) % self.slots) * _RECORD.size
            found, tokens, last = _RECORD.unpack_from(self._map, offset)
            if found == fingerprint:
                return offset, tokens, last
            if found == 0:
                return offset, self.burst, now
            if last < idle_last:
                idle_offset, idle_last = offset, last
        return idle_offset, self.burst, now

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


def shared_buckets_file() -> Path | None:
    """The buckets file of this service instance when it runs several worker processes, else None."""
    shared = os.environ.get(SHARED_DIR_ENV)
    return Path(shared) / "rate-limit-buckets" if shared else None
