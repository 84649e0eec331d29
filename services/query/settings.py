"""Settings of the query API (`K2_QUERY_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from services.common.settings import K2Settings


class QuerySettings(K2Settings):
    """The query service: FastAPI + DuckDB over the Iceberg lake."""

    query_host: str = Field("127.0.0.1", description="Interface the HTTP API listens on.")
    query_port: int = Field(8000, description="Port of the HTTP API (it serves /metrics too).")
    query_auth_enabled: bool = Field(
        False, description="Require an API key in the X-API-Key header (off for local use, on in compose)."
    )
    query_api_keys: str = Field(
        "", description="Accepted API keys, comma-separated (used together with K2_QUERY_API_KEYS_FILE)."
    )
    query_api_keys_file: Path | None = Field(
        None, description="File with one accepted API key per line (# comments and blank lines ignored)."
    )
    query_rate_limit_per_s: float = Field(
        50.0,
        description="Sustained requests per second allowed per API key (per client address when auth "
        "is off); 0 disables rate limiting.",
    )
    query_rate_limit_burst: int = Field(100, description="Requests a key may burst above the sustained rate.")
    query_timeout_s: float = Field(10.0, description="A query running longer is interrupted and answers 504.")
    query_max_range_days: float = Field(
        366.0, description="Largest time range (end - start) one request may scan; larger answers 422."
    )
    query_max_page_rows: int = Field(10_000, description="Largest JSON page of trades or candles.")
    query_cache_bytes: int = Field(
        256 * 1024 * 1024, description="Memory for cached JSON responses (keyed by snapshot ids)."
    )
    query_refresh_s: float = Field(
        0.5, description="How often table metadata is re-read from the catalog to find new snapshots."
    )
    query_cors_origins: str = Field(
        "", description="Origins allowed by CORS, comma-separated (`*` for any); empty disables CORS."
    )
    query_cursor_secret: str = Field(
        "",
        description="Secret that signs pagination cursors; empty means a random one per start (shared by "
        "the worker processes).",
    )
    query_duckdb_threads: int = Field(2, description="DuckDB worker threads.")
    query_workers: int = Field(16, description="Threads that run DuckDB queries concurrently.")
    query_processes: int = Field(
        2,
        ge=1,
        description="HTTP worker processes sharing the port (one Python process serves on one core); "
        "response caches are per process, rate-limit buckets and metrics are shared.",
    )
    query_kafka_timeout_s: float = Field(
        10.0, description="How long an SSE request waits for the broker before answering 503."
    )
    query_sse_heartbeat_s: float = Field(15.0, description="Seconds between SSE keep-alive comments.")

    @field_validator("query_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {value}")
        return value

    @field_validator("query_timeout_s", "query_max_range_days", "query_refresh_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    def api_keys(self) -> frozenset[str]:
        keys = {k.strip() for k in self.query_api_keys.split(",") if k.strip()}
        if self.query_api_keys_file is not None:
            for line in self.query_api_keys_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.add(line)
        return frozenset(keys)

    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.query_cors_origins.split(",") if o.strip()]
