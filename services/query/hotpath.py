"""The cached-response fast path: a repeated candle or trade page is a dict lookup and a bytes send.

FastAPI's per-request work (dependency solving, parameter validation) costs more than the cached
lookup it guards, so a request that was already answered is served here, in a pure ASGI middleware,
before routing. Only *deterministic* JSON reads are stored (see `cacheable`): explicit `start` and
`end`, no `as_of`, no `cursor`, JSON. Their answer depends only on the path, the exact query string and
the table's snapshot, so the key is (path, raw query string, current snapshot id): a new snapshot is a
new key and nothing stale is served. The normal route stored the entry after a 200, so the same query
string already passed every validation.

Security is unchanged: the API key is checked and the key's token bucket charged here exactly as the
route's dependencies would; any request this path does not answer (unknown key, empty bucket, not
cached) goes through the normal route, which answers 401/403/429 and counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.schemas import TIMEFRAMES
from services.common.tables import SILVER_TRADES, gold_table
from services.query import metrics

# Exact paths served from the cache → the table whose snapshot keys the entry.
TABLE_OF_PATH: dict[str, str] = {
    "/v1/trades": SILVER_TRADES,
    **{f"/v1/ohlcv/{tf}": gold_table(tf) for tf in TIMEFRAMES},
}


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    rows: int
    route: Any  # the matched starlette route (MetricsMiddleware labels requests by route.path)
    snapshot_header: bytes


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
    """Pure ASGI middleware; `owner` is the FastAPI app (its state holds the lake and the security)."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            table = TABLE_OF_PATH.get(scope["path"])
            lake = self.owner.state.lake if table is not None else None
            if lake is not None:
                key = key_of(scope["path"], scope["query_string"], lake.current_ids.get(table))
                entry: Entry | None = lake.responses.peek(key)
                if entry is not None and self._admit(scope):
                    await self._send(scope, send, entry)
                    return
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope) -> bool:
        security = self.owner.state.security
        client = scope.get("client")
        principal = security.known_principal(client[0] if client else None, _header(scope, b"x-api-key"))
        return principal is not None and security.buckets.take(principal) == 0

    @staticmethod
    async def _send(scope: Scope, send: Send, entry: Entry) -> None:
        scope["route"] = entry.route
        metrics.ROWS.labels(entry.route.path).inc(entry.rows)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(entry.body)).encode()),
                    (b"x-k2-snapshot-id", entry.snapshot_header),
                ],
            }
        )
        await send({"type": "http.response.body", "body": entry.body})
