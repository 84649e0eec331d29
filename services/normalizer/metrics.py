"""Prometheus metrics of the normalizer (k2_normalizer_*)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

# The latency target (p99 received_at → normalized < 50 ms) falls between the shared buckets' 25, 50
# and 100 ms: finer steps there let histogram_quantile tell 52 ms from 98 ms.
TRADE_LATENCY_BUCKETS = tuple(sorted({*LATENCY_BUCKETS, 0.015, 0.02, 0.03, 0.04, 0.06, 0.075, 0.15}))

FRAMES_IN = Counter(
    "k2_normalizer_frames_in_total",
    "Raw records consumed, by exchange and outcome (trades, control, rejected, marker)",
    ["exchange", "kind"],
)
CONTROL_FRAMES = Counter(
    "k2_normalizer_control_frames_total",
    "Control frames recognised (acks, heartbeats, status, subscriptions, errors)",
    ["exchange", "control"],
)
TRADES_IN = Counter(
    "k2_normalizer_trades_in_total", "Valid trades parsed from frames (before dedup)", ["exchange"]
)
TRADES_OUT = Counter(
    "k2_normalizer_trades_out_total", "Trades published to market.crypto.trades", ["exchange"]
)
DEAD_LETTERS = Counter(
    "k2_normalizer_dead_letters_total", "Dead letters sent, by reason", ["exchange", "reason"]
)
DUPLICATES = Counter(
    "k2_normalizer_duplicates_dropped_total",
    "Trades dropped as already published "
    "(natural key), by exchange; reason=horizon when older than the dedup horizon",
    ["exchange", "reason"],
)
GAPS = Counter(
    "k2_normalizer_gaps_total", "Gaps reported (sequence holes, feed disconnects)", ["exchange", "kind"]
)
MISSING = Counter(
    "k2_normalizer_gap_missing_total", "Trade ids / sequence numbers reported missing", ["exchange"]
)
EXCHANGE_LATENCY = Histogram(
    "k2_normalizer_exchange_to_normalized_seconds",
    "exchange_ts → published",
    ["exchange"],
    buckets=TRADE_LATENCY_BUCKETS,
)
RECEIVED_LATENCY = Histogram(
    "k2_normalizer_received_to_normalized_seconds",
    "received_at → published",
    ["exchange"],
    buckets=TRADE_LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "k2_normalizer_batch_seconds",
    "CPU time to process one partition's batch (its transaction is timed by transaction_seconds)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "k2_normalizer_consumer_lag_messages",
    "Last stable offset − committed position per assigned partition",
    ["topic", "partition"],
)
ASSIGNED_PARTITIONS = Gauge(
    "k2_normalizer_assigned_partitions", "Input partitions (raw and parsed) this worker owns now"
)
TRANSACTION_SECONDS = Histogram(
    "k2_normalizer_transaction_seconds",
    "Time from the first output sent to the commit of a partition's Kafka transaction",
    buckets=LATENCY_BUCKETS,
)
TRANSACTIONS = Counter(
    "k2_normalizer_transactions_total",
    "Input batches committed (one transaction holds every batch queued while the one before it committed)",
    ["stage"],
)
