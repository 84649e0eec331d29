"""`python -m services.feed.simulator [--capture FILE] [--rate N] [--port P]`: a local exchange simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from services.common.logs import setup_logging
from services.common.metrics import serve_metrics
from services.feed.settings import FeedSettings
from services.feed.simulator.server import Simulator

log = logging.getLogger("services.feed.simulator")


async def serve_forever(settings: FeedSettings, args: argparse.Namespace) -> None:
    sim = Simulator(
        settings.instruments(),
        seed=args.seed,
        rate=args.rate,
        capture=args.capture or None,
        speed=args.speed,
        bursts=not args.no_bursts,
    )
    await sim.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    settings = FeedSettings()
    parser = argparse.ArgumentParser(prog="python -m services.feed.simulator")
    parser.add_argument("--host", default=settings.feed_simulator_host)
    parser.add_argument("--port", type=int, default=settings.feed_simulator_port)
    parser.add_argument(
        "--capture",
        default=settings.feed_simulator_capture,
        help="serve this capture file (re-timed to now) instead of a synthetic market",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="capture pace factor")
    parser.add_argument(
        "--rate",
        type=float,
        default=settings.feed_simulator_rate,
        help="synthetic trades per second per exchange",
    )
    parser.add_argument("--seed", type=int, default=settings.feed_simulator_seed)
    parser.add_argument("--no-bursts", action="store_true", help="a steady rate (for benchmarks)")
    args = parser.parse_args(argv)
    setup_logging(settings.log_level, "simulator")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection otherwise
    serve_metrics("simulator", settings.feed_simulator_metrics_port, settings.metrics_host)
    asyncio.run(serve_forever(settings, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
