"""`python -m services.feed [run | record FILE | replay FILE [--speed X | --max]]`."""

from __future__ import annotations

import argparse
import asyncio
import logging

from services.common.logs import setup_logging
from services.common.metrics import serve_metrics
from services.feed.app import build_connectors, ensure_raw_topics, run_until_signalled
from services.feed.capture import CaptureWriter
from services.feed.publisher import KafkaPublisher
from services.feed.replay import replay
from services.feed.settings import FeedSettings

log = logging.getLogger("services.feed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.feed", description="Exchange WebSockets → raw Kafka topics."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="connect to the exchanges (or the simulator) and publish (the default)")
    record = sub.add_parser("record", help="write received frames to a capture file instead of Kafka")
    record.add_argument("file")
    record.add_argument("--seconds", type=float, default=None, help="stop after this long")
    play = sub.add_parser("replay", help="publish a capture file as live would")
    play.add_argument("file")
    pace = play.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="pace factor (2 = twice as fast)")
    pace.add_argument("--max", action="store_true", help="as fast as possible")
    return parser.parse_args(argv)


async def run(settings: FeedSettings) -> None:
    if settings.feed_source == "none":
        log.info("K2_FEED_SOURCE=none: no connections")
    publisher = KafkaPublisher(
        settings.kafka_bootstrap, settings.feed_buffer_frames, settings.feed_produce_timeout_ms
    )
    await ensure_raw_topics(settings.kafka_bootstrap)
    await publisher.start()
    connectors = [] if settings.feed_source == "none" else build_connectors(settings, publisher)
    try:
        await run_until_signalled(connectors)
    finally:
        await publisher.stop()


async def record(settings: FeedSettings, path: str, seconds: float | None) -> None:
    writer = CaptureWriter.open(path)
    connectors = build_connectors(settings, writer)
    try:
        if seconds is None:
            await run_until_signalled(connectors)
        else:
            tasks = [asyncio.create_task(c.run()) for c in connectors]
            await asyncio.sleep(seconds)
            for connector in connectors:
                connector.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        writer.close()
        log.info("wrote %d record(s) to %s", writer.written, path)


async def replay_file(settings: FeedSettings, path: str, speed: float | None) -> bool:
    publisher = KafkaPublisher(
        settings.kafka_bootstrap,
        settings.feed_buffer_frames,
        settings.feed_produce_timeout_ms,
        observe_latency=False,
    )
    await ensure_raw_topics(settings.kafka_bootstrap)
    await publisher.start()
    try:
        count = await replay(path, publisher, speed)
    finally:
        flushed = await publisher.stop(timeout=120)
    log.info("replayed %d record(s) from %s%s", count, path, "" if flushed else " (NOT all acknowledged)")
    return flushed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = FeedSettings()
    setup_logging(settings.log_level, "feed")
    serve_metrics("feed", settings.metrics_port, settings.metrics_host)
    command = args.command or "run"
    if command == "run":
        asyncio.run(run(settings))
    elif command == "record":
        asyncio.run(record(settings, args.file, args.seconds))
    elif not asyncio.run(replay_file(settings, args.file, None if args.max else args.speed)):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
