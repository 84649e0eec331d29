"""Prometheus metrics of the OHLCV service (k2_ohlcv_*)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

TRADES_IN = Counter("k2_ohlcv_trades_in_total", "Trades consumed from market.crypto.trades")
TRADES_SKIPPED = Counter(
    "k2_ohlcv_trades_skipped_total",
    "Trades not applied: invalid (undecodable record) or duplicate (already in the candle after a restart)",
    ["reason"],
)
CANDLES_OUT = Counter(
    "k2_ohlcv_candles_out_total",
    "Candles published, by timeframe and kind (live, final, revision)",
    ["timeframe", "kind"],
)
LATE_TRADES = Counter(
    "k2_ohlcv_late_trades_total",
    "Trades for an already closed window: revised (a new revision follows) or beyond_horizon (not applied)",
    ["timeframe", "outcome"],
)
WATERMARK_LAG = Gauge(
    "k2_ohlcv_watermark_lag_seconds", "Wall clock minus the partition's watermark", ["partition"]
)
CONSUMER_LAG = Gauge(
    "k2_ohlcv_consumer_lag_records", "Records of market.crypto.trades not yet processed", ["partition"]
)
CLOSE_LATENCY = Histogram(
    "k2_ohlcv_close_latency_seconds",
    "Wall-clock time from window end + grace to the final candle being acknowledged by the broker",
    ["timeframe"],
    buckets=LATENCY_BUCKETS,
)
OPEN_CANDLES = Gauge("k2_ohlcv_state_candles", "Candles held in state (open and closed)", ["state"])
BATCH_SECONDS = Histogram(
    "k2_ohlcv_batch_seconds",
    "CPU time to apply one partition's batch of trades and derive its outputs",
    buckets=LATENCY_BUCKETS,
)
TRANSACTION_SECONDS = Histogram(
    "k2_ohlcv_transaction_seconds",
    "Time from the first output sent to the commit of a partition's Kafka transaction",
    buckets=LATENCY_BUCKETS,
)
