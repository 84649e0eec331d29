"""API keys and per-key rate limits, as FastAPI dependencies.

Order matters (the old system's decorators were stacked so the limiter never ran): `rate_limit`
*depends on* `authenticate`, so every request is first authenticated (401/403), then charged to
its key's token bucket (429 + Retry-After), and only then are its parameters used.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from services.query import metrics
from services.query.settings import QuerySettings
from services.query.shared_buckets import SharedTokenBuckets, shared_buckets_file

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (required when K2_QUERY_AUTH_ENABLED is true)"
)


class TokenBuckets:
    """One token bucket per principal; runs on the event loop only, so needs no lock."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, principal: str) -> float:
        """0 if the request may go; otherwise the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self.buckets.get(principal, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            if len(self.buckets) >= self.max_keys and principal not in self.buckets:
                self.buckets.clear()  # bounded memory under a flood of distinct clients
            self.buckets[principal] = (tokens - 1.0, now)
            return 0.0
        self.buckets[principal] = (tokens, now)
        return (1.0 - tokens) / self.rate


class Security:
    def __init__(self, settings: QuerySettings) -> None:
        self.enabled = settings.query_auth_enabled
        self.keys = settings.api_keys()
        if self.enabled and not self.keys:
            raise ValueError(
                "K2_QUERY_AUTH_ENABLED is true but no key is configured "
                "(K2_QUERY_API_KEYS or K2_QUERY_API_KEYS_FILE)"
            )
        rate, burst = settings.query_rate_limit_per_s, settings.query_rate_limit_burst
        shared = shared_buckets_file()
        # Several worker processes (services.query.workers) charge one set of buckets in a shared file.
        self.buckets: TokenBuckets | SharedTokenBuckets = (
            TokenBuckets(rate, burst) if shared is None else SharedTokenBuckets(shared, rate, burst)
        )

    def known_principal(self, client_host: str | None, key: str | None) -> str | None:
        """The principal of a request whose credentials are acceptable, else None (no metric, no error).

        Used by the cached-response fast path; anything it refuses takes the normal route, which answers
        401/403 and counts it.
        """
        if not self.enabled:
            return f"addr:{client_host or '?'}"
        if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys):
            return None
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def principal(self, request: Request, key: str | None) -> str:
        if not self.enabled:
            return f"addr:{request.client.host if request.client else '?'}"
        if not key:
            metrics.AUTH_FAILURES.labels("401").inc()
            raise HTTPException(
                401, "missing API key (header X-API-Key)", headers={"WWW-Authenticate": "ApiKey"}
            )
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys):
            metrics.AUTH_FAILURES.labels("403").inc()
            raise HTTPException(403, "invalid API key")
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


async def get_security(request: Request) -> Security:
    return request.app.state.security


async def authenticate(
    request: Request, key: str | None = Depends(API_KEY_HEADER), security: Security = Depends(get_security)
) -> str:
    return security.principal(request, key)


async def rate_limit(
    principal: str = Depends(authenticate), security: Security = Depends(get_security)
) -> str:
    wait = security.buckets.take(principal)
    if wait > 0:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return principal
