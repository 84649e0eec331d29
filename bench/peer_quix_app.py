"""The peer: 1-minute OHLCV over market.crypto.trades computed by Quix Streams.

Runs inside its own virtualenv (bench/peer-requirements.txt: quixstreams pins pydantic < 2.14,
which K2 pins higher), so this file imports only the standard library and quixstreams; the
harness (bench/peer_quix.py) starts it as `<peer venv>/bin/python bench/peer_quix_app.py`.

Written the way the Quix docs write it: JSON in, a tumbling 1 m window keyed by the Kafka key
(`<exchange>:<symbol>`), event time from the trade's exchange_ts, Earliest/Latest/Max/Min/Sum/Count,
final() results out. Quix keeps window state as JSON in RocksDB, which cannot hold a Decimal,
so prices and quantities are floats here — the honest, idiomatic Quix way; the comparison
reports where that differs from K2's exact decimals.

Environment: PEER_BOOTSTRAP, PEER_GROUP, PEER_STATE_DIR, PEER_INPUT, PEER_OUTPUT,
PEER_GRACE_MS (default 10000, K2's default grace), PEER_GUARANTEE (exactly-once | at-least-once),
PEER_COMMIT_INTERVAL (s), PEER_PROGRESS_EVERY.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Earliest, Latest, Max, Min, Sum


def exchange_ts_ms(value, headers, timestamp, timestamp_type) -> int:
    """Event time: the trade's execution time (µs in K2's wire format) in ms, Quix's unit."""
    return int(value["exchange_ts"]) // 1000


class Progress:
    """Prints `{"n": trades seen, "t": unix time}` every `every` trades, so the harness can time us."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.n = 0

    def __call__(self, trade: dict) -> dict:
        self.n += 1
        if self.n % self.every == 0:
            print(json.dumps({"n": self.n, "t": time.time()}), file=sys.stderr, flush=True)
        return trade


def to_numbers(trade: dict) -> dict:
    return {"price": float(trade["price"]), "quantity": float(trade["quantity"])}


def main() -> None:
    app = Application(
        broker_address=os.environ["PEER_BOOTSTRAP"],
        consumer_group=os.environ.get("PEER_GROUP", "bench-quix"),
        auto_offset_reset="earliest",
        state_dir=os.environ.get("PEER_STATE_DIR", "state"),
        processing_guarantee=os.environ.get("PEER_GUARANTEE", "exactly-once"),  # type: ignore[arg-type]
        commit_interval=float(os.environ.get("PEER_COMMIT_INTERVAL", "1.0")),
        loglevel="WARNING",
    )
    trades = app.topic(
        os.environ.get("PEER_INPUT", "market.crypto.trades"),
        value_deserializer="json",
        timestamp_extractor=exchange_ts_ms,
    )
    candles = app.topic(os.environ.get("PEER_OUTPUT", "bench.quix.ohlcv"), value_serializer="json")
    sdf = app.dataframe(trades)
    sdf = sdf.apply(Progress(int(os.environ.get("PEER_PROGRESS_EVERY", "2000")))).apply(to_numbers)
    sdf = (
        sdf.tumbling_window(
            duration_ms=timedelta(minutes=1), grace_ms=int(os.environ.get("PEER_GRACE_MS", "10000"))
        )
        .agg(
            open=Earliest("price"),
            close=Latest("price"),
            high=Max("price"),
            low=Min("price"),
            volume=Sum("quantity"),
            trade_count=Count(),
        )
        .final()
    )
    sdf.to_topic(candles)
    app.run()


if __name__ == "__main__":
    main()
