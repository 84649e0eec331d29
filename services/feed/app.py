"""Wiring: settings → connector slots (symbols chunked per connection) feeding one sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from services.common.kafka import ensure_topics, wait_for_broker
from services.common.metrics import UP
from services.common.topics import RAW_TOPICS, TOPICS_BY_NAME
from services.feed.connector import Connector, ConnectorOptions
from services.feed.records import Sink
from services.feed.settings import FeedSettings

log = logging.getLogger(__name__)


def options_from(settings: FeedSettings) -> ConnectorOptions:
    return ConnectorOptions(
        stale_after_s=settings.feed_stale_after_s,
        rotate_after_s=settings.feed_rotate_after_s,
        ping_interval_s=settings.feed_ping_interval_s,
        ping_timeout_s=settings.feed_ping_timeout_s,
        backoff_initial_s=settings.feed_backoff_initial_s,
        backoff_max_s=settings.feed_backoff_max_s,
        max_message_bytes=settings.feed_max_message_bytes,
    )


def build_connectors(settings: FeedSettings, sink: Sink) -> list[Connector]:
    connectors: list[Connector] = []
    options = options_from(settings)
    size = max(1, settings.feed_symbols_per_connection)
    for exchange in settings.exchanges():
        natives = [inst.native for inst in settings.symbols(exchange)]
        for index, start in enumerate(range(0, len(natives), size)):
            connectors.append(
                Connector(
                    exchange,
                    f"{exchange}-{index}",
                    settings.url(exchange),
                    natives[start : start + size],
                    sink,
                    options,
                )
            )
    return connectors


async def ensure_raw_topics(bootstrap: str) -> None:
    """Create the raw topics if missing (best effort: the publisher retries anyway)."""
    try:
        await wait_for_broker(bootstrap, timeout=30)
        await ensure_topics(bootstrap, [TOPICS_BY_NAME[name] for name in RAW_TOPICS.values()])
    except Exception as exc:  # the broker may come later; records wait in the buffer
        log.warning("could not ensure the raw topics yet: %r", exc)


async def run_until_signalled(connectors: list[Connector], service: str = "feed") -> None:
    """Run the connectors until SIGTERM/SIGINT, then stop them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(c.run(), name=c.slot) for c in connectors]
    UP.labels(service).set(1)
    log.info(
        "running %d connection slot(s): %s",
        len(connectors),
        ", ".join(f"{c.slot}({len(c.natives)})" for c in connectors),
    )
    try:
        await stop.wait()
    finally:
        UP.labels(service).set(0)
        for connector in connectors:
            connector.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
