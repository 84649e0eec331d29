"""The cached-response fast path: a repeated candle or trade page is a dict lookup and a bytes send.

FastAPI's per-request work (dependency solving, parameter validation, its middleware stack) costs
more than the cached lookup it guards, so a request that was already answered is served here, before
the app's stack (QueryAPI.__call__). Only *deterministic* JSON reads are stored (see `cacheable`):
explicit `start` and `end`, no `as_of`, no `cursor`, JSON. Their answer depends only on the path, the
exact query string and the table's snapshot, so the key is (path, raw query string, current snapshot
id): a new snapshot is a new key and nothing stale is served. The normal route stored the entry after
a 200, so the same query string already passed every validation.

A client that accepts gzip (`Accept-Encoding: gzip`, as browsers, curl --compressed, requests and
httpx send by default) gets the entry's precompressed body. An entry is compressed once, on a DuckDB
worker thread, when it is first asked for again by such a client (that answer still goes out as it
is): a query that is never repeated pays nothing, a repeated one costs no compression per hit, and
the bytes sent (and copied through the kernel) shrink ~5x: a day of 1m candles is ~0.7 MB of JSON,
~0.14 MB gzipped. Every answer of these paths carries `Vary: Accept-Encoding`.

Security is unchanged: the API key is checked and the key's token bucket charged here exactly as the
route's dependencies would; any request this path does not answer (unknown key, empty bucket, not
cached, a cross-origin request) goes through the normal route, which answers 401/403/429 (and CORS)
and counts them.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope, Send

from services.common.schemas import TIMEFRAMES
from services.common.tables import SILVER_TRADES, gold_table
from services.query import metrics

# Exact paths served from the cache → the table whose snapshot keys the entry.
TABLE_OF_PATH: dict[str, str] = {
    "/v1/trades": SILVER_TRADES,
    **{f"/v1/ohlcv/{tf}": gold_table(tf) for tf in TIMEFRAMES},
}


# Smaller bodies go out as they are: compressing them saves less than its headers cost.
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6  # paid once per entry; level 9 is ~3x slower for ~2 % fewer bytes


@dataclass(slots=True)
class Entry:
    body: bytes
    rows: int
    route: Any  # the starlette route that stored it: its path template labels the metrics
    snapshot_header: bytes
    gzipped: bytes | None = None  # body gzip-compressed, once asked for again (see module doc)
    compressing: bool = False

    def compress(self) -> None:
        """Fill `gzipped` (on a worker thread: ~20 ms per MB; zlib lets go of the GIL meanwhile)."""
        self.gzipped = gzip.compress(self.body, GZIP_LEVEL, mtime=0)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 §12.5.3: `gzip` with q > 0, or else
    `*` with q > 0; a malformed q admits nothing)."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        try:
            weights[coding] = float(q[2:]) if q.startswith("q=") else 1.0
        except ValueError:
            weights[coding] = 0.0
    named = [weights[c] for c in ("gzip", "x-gzip") if c in weights]
    weight = max(named) if named else weights.get("*", 0.0)
    return weight > 0


def cacheable(params: dict[str, Any]) -> bool:
    """Whether a JSON read's answer is fixed by its query string and snapshot (see module doc)."""
    return (
        params.get("start") is not None
        and params.get("end") is not None
        and params.get("as_of") is None
        and params.get("cursor") is None
        and params.get("format", "json") == "json"
    )


def key_of(path: str, query_string: bytes, snapshot_id: int | None) -> tuple:
    return (path, query_string, snapshot_id)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class HotPath:
    """Answers cached reads ahead of the app's middleware stack (see QueryAPI in services/query/app.py):
    ~30 % of a hit's server time was spent passing FastAPI's and Starlette's middlewares. So this path
    does what the skipped parts would have done for such a request: it counts it (requests, latency,
    rows under the route's label, as MetricsMiddleware does) and checks the key and rate limit. A
    request carrying `Origin` goes the normal way, where CORS answers it (from the result cache).
    `owner` is the FastAPI app (its state holds the lake and the security)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self._metrics: dict[str, tuple[Any, Any, Any]] = {}

    async def serve(self, scope: Scope, send: Send) -> bool:
        """Send the cached answer of this request if there is one and it may have it."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        table = TABLE_OF_PATH.get(scope["path"])
        lake = self.owner.state.lake if table is not None else None
        if lake is None or _header(scope, b"origin") is not None:
            return False
        started = time.perf_counter()
        entry: Entry | None = lake.responses.peek(
            key_of(scope["path"], scope["query_string"], lake.current_ids.get(table))
        )
        if entry is None or not self._admit(scope):
            return False
        await self._send(scope, send, entry)
        requests, latency, rows = self._route_metrics(entry.route.path)
        requests.inc()
        rows.inc(entry.rows)
        latency.observe(time.perf_counter() - started)
        return True

    def _route_metrics(self, route: str) -> tuple[Any, Any, Any]:
        found = self._metrics.get(route)
        if found is None:
            found = (
                metrics.REQUESTS.labels(route, "200"),
                metrics.LATENCY.labels(route),
                metrics.ROWS.labels(route),
            )
            self._metrics[route] = found
        return found

    def _admit(self, scope: Scope) -> bool:
        security = self.owner.state.security
        client = scope.get("client")
        principal = security.known_principal(client[0] if client else None, _header(scope, b"x-api-key"))
        return principal is not None and security.buckets.take(principal) == 0

    async def _send(self, scope: Scope, send: Send, entry: Entry) -> None:
        headers = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
        body = entry.body
        if len(body) >= GZIP_MIN_BYTES and accepts_gzip(_header(scope, b"accept-encoding")):
            if entry.gzipped is not None:
                body = entry.gzipped
                headers.append((b"content-encoding", b"gzip"))
            elif not entry.compressing:  # the first repeat asking for gzip: compress it once
                entry.compressing = True
                asyncio.get_running_loop().run_in_executor(self.owner.state.lake.executor, entry.compress)
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"x-k2-snapshot-id", entry.snapshot_header))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
