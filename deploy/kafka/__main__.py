"""`python -m deploy.kafka fetch|start|stop|status|wait` for the local broker (settings from K2_*)."""

from __future__ import annotations

import argparse
import sys
import time

from deploy.kafka.broker import BrokerError, fetch_jars, from_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.kafka")
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "wait"])
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            started = time.monotonic()
            print(f"Kafka jars in {fetch_jars(quiet=False)} ({time.monotonic() - started:.1f}s)")
            return 0
        broker = from_settings()
        if args.command == "start":
            started = time.monotonic()
            broker.start()
            print(
                f"Kafka broker ready on {broker.bootstrap} (pid {broker.pid()}, "
                f"{time.monotonic() - started:.1f}s); log {broker.log_file}"
            )
        elif args.command == "stop":
            print("Kafka broker stopped" if broker.stop() else "Kafka broker was not running")
        elif args.command == "wait":
            broker.wait_ready()
            print(f"Kafka broker ready on {broker.bootstrap}")
        else:
            pid = broker.pid()
            if pid is None:
                print(f"Kafka broker: stopped (data {broker.home})")
                return 3
            rss = broker.rss_bytes() or 0
            print(f"Kafka broker: running pid {pid} on {broker.bootstrap}, RSS {rss / 2**20:.0f} MiB")
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
