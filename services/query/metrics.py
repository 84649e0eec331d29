"""Prometheus metrics of the query API (served on its own HTTP port at /metrics)."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

from services.common.metrics import LATENCY_BUCKETS

REQUESTS = Counter(
    "k2_query_requests_total", "HTTP requests by route template and status", ["route", "status"]
)
LATENCY = Histogram(
    "k2_query_request_duration_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
ROWS = Counter("k2_query_rows_returned_total", "Rows returned to clients by route", ["route"])
CACHE_HITS = Counter("k2_query_cache_hits_total", "Cache hits by cache (result | plan)", ["cache"])
CACHE_MISSES = Counter("k2_query_cache_misses_total", "Cache misses by cache (result | plan)", ["cache"])
DUCKDB_ERRORS = Counter("k2_query_duckdb_errors_total", "DuckDB errors by kind (timeout | error)", ["kind"])
RATE_LIMITED = Counter("k2_query_rate_limited_total", "Requests refused with 429")
AUTH_FAILURES = Counter("k2_query_auth_failures_total", "Requests refused with 401/403", ["status"])
SSE_CLIENTS = Counter("k2_query_sse_events_total", "Candle updates sent to SSE clients")


def registry() -> CollectorRegistry:
    """What /metrics exposes: every worker's metrics summed in multi-process mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected
