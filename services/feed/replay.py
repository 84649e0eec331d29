"""Publish a capture file exactly as live would: same topics, keys, headers, order; paced or at full speed."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from services.feed.capture import read_capture
from services.feed.records import Sink

log = logging.getLogger(__name__)


async def replay(path: Path | str, sink: Sink, speed: float | None = 1.0) -> int:
    """Feed every record of the capture to sink; speed None = as fast as possible. Returns the count."""
    count = 0
    first_ns: int | None = None
    started = time.monotonic()
    for record in read_capture(path):
        if speed is not None:
            if first_ns is None:
                first_ns = record.received_at_ns
            due = started + (record.received_at_ns - first_ns) / 1e9 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await sink.publish(record)
        count += 1
        if count % 4096 == 0:
            await asyncio.sleep(0)  # let the publisher run when the buffer never fills
    return count
