"""Prometheus metrics of the feed (names `k2_feed_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

FRAMES = Counter("k2_feed_frames_total", "Text frames received", ["exchange", "connection"])
BYTES = Counter("k2_feed_bytes_total", "Bytes of text frames received", ["exchange", "connection"])
TRADES = Counter("k2_feed_trades_total", "Trades seen in received frames (counted, not parsed)", ["exchange"])
CONNECTION_STATE = Gauge(
    "k2_feed_connection_state",
    "1 for the state a connection slot is in (connecting, subscribed, paused, backoff)",
    ["exchange", "slot", "state"],
)
RECONNECTS = Counter("k2_feed_reconnects_total", "Reconnects by reason", ["exchange", "reason"])
LAST_FRAME_AGE = Gauge("k2_feed_last_frame_age_seconds", "Seconds since the last frame", ["exchange", "slot"])
PRODUCE_LATENCY = Histogram(
    "k2_feed_produce_latency_seconds",
    "received_at → Kafka acknowledgement",
    ["exchange"],
    buckets=LATENCY_BUCKETS,
)
PRODUCED = Counter("k2_feed_records_produced_total", "Records acknowledged by Kafka", ["topic"])
PRODUCE_ERRORS = Counter(
    "k2_feed_produce_errors_total", "Failed produce attempts (records re-sent)", ["error"]
)
BUFFER_DEPTH = Gauge("k2_feed_buffer_frames", "Records buffered and not yet acknowledged by Kafka")
BACKPRESSURE = Counter(
    "k2_feed_backpressure_pauses_total",
    "Times a connection stopped reading because the buffer was full",
    ["exchange"],
)
OVERSIZED = Counter(
    "k2_feed_oversized_frames_total",
    "Frames over the raw contract's 1 MiB, counted and not published",
    ["exchange"],
)
BINARY = Counter(
    "k2_feed_binary_frames_total", "Binary frames (not part of any protocol), not published", ["exchange"]
)
MARKERS = Counter("k2_feed_disconnect_markers_total", "Disconnect markers published", ["exchange"])
