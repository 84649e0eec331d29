"""The query API: FastAPI routes over the lake (see README.md for the contract of each endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal

import duckdb
import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.decimals import divide, to_text
from services.common.instruments import EXCHANGES
from services.common.schemas import TIMEFRAMES
from services.common.tables import SILVER_TRADES, TABLES, gold_table
from services.query import exports, hotpath, jsonrows, live, metrics, sql
from services.query.lake import Lake, Pinned, QueryTimeout, UnknownSnapshot, iso
from services.query.params import (
    CursorCodec,
    check_symbol,
    from_us,
    parse_as_of,
    parse_day,
    query_hash,
    time_range,
    to_us,
    unprocessable,
)
from services.query.security import Security, rate_limit
from services.query.settings import QuerySettings

log = logging.getLogger(__name__)

Exchange = Enum("Exchange", {e: e for e in EXCHANGES}, type=str)  # type: ignore[misc]
Timeframe = Enum("Timeframe", {tf: tf for tf in TIMEFRAMES}, type=str)  # type: ignore[misc]
TableName = Enum("TableName", {t: t for t in TABLES}, type=str)  # type: ignore[misc]
Format = Literal["json", "csv", "parquet", "arrow"]
SYMBOL_DOC = "canonical BASE/QUOTE symbol, e.g. BTC/USDT; an unknown symbol gives an empty result"
TIME_DOC = "ISO-8601 (naive = UTC) or epoch seconds/ms/µs"
AS_OF_DOC = "time travel: a snapshot id (integer) or an ISO-8601 time (the snapshot current then)"


class MetricsMiddleware:
    """Pure ASGI (no per-request task): requests by route template and status, latency per route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics.REQUESTS.labels(label, str(status[0])).inc()
            metrics.LATENCY.labels(label).observe(time.perf_counter() - started)


class QueryAPI(FastAPI):
    """FastAPI whose cached answers leave before its middleware stack (services/query/hotpath.py)."""

    hot: hotpath.HotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot is not None and await self.hot.serve(scope, send):
            return
        await super().__call__(scope, receive, send)


def _lake(request: Request) -> Lake:
    return request.app.state.lake


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")


async def _pin(lake: Lake, table: str, as_of: Any = None) -> Pinned:
    """Pin a table's snapshot for this request (planning a new snapshot runs on a worker thread)."""
    pinned = lake.pin_if_planned(table, as_of)
    if pinned is not None:
        return pinned
    return await asyncio.get_running_loop().run_in_executor(lake.executor, lake.pin, table, as_of)


async def _cached_json(
    request: Request,
    key: tuple,
    build: Callable[[duckdb.DuckDBPyConnection], tuple[bytes, int]],
    headers: dict[str, str] | None = None,
    hot: Pinned | None = None,
) -> Response:
    """The JSON body for key (built on a DuckDB worker thread on a miss).

    hot: the pinned table of a deterministic read (hotpath.cacheable): the response is also stored for
    the fast path under (path, raw query string, snapshot id).
    """
    lake = _lake(request)
    hit = lake.results.get(key)
    if hit is None:

        async def compute() -> tuple[bytes, int]:
            cached = lake.results.peek(key)  # a request that waited on another's query finds it here
            if cached is not None:
                return cached
            built = await lake.run(build)
            lake.results.put(key, built, len(built[0]) + 200)
            return built

        hit = await lake.flights.run(key, compute)
    body, rows = hit
    metrics.ROWS.labels(_route(request)).inc(rows)
    if hot is not None:
        fast_key = hotpath.key_of(request.scope["path"], request.scope["query_string"], hot.snapshot_id)
        if lake.responses.peek(fast_key) is None:
            entry = hotpath.Entry(body, rows, request.scope.get("route"), str(hot.snapshot_id or "").encode())
            # room for the gzip form the fast path may add (~1/5 of the body)
            lake.responses.put(fast_key, entry, len(body) + len(body) // 4 + 300)
        headers = {**(headers or {}), "Vary": "Accept-Encoding"}
    return Response(body, media_type="application/json", headers=headers)


def _page_body(
    snapshot_id: int | None, items: bytes, count: int, next_cursor: str | None, extra: dict
) -> bytes:
    """The page object; items = the JSON array's inside (rows already encoded, comma-separated)."""
    head = orjson.dumps({**extra, "snapshot_id": snapshot_id, "count": count, "next_cursor": next_cursor})
    return head[:-1] + b',"data":[' + items + b"]}"


def _last_row(page: pa.Table) -> dict[str, Any]:
    return page.slice(page.num_rows - 1, 1).to_pylist()[0]


def _snapshot_header(pinned: Pinned) -> dict[str, str]:
    return {"X-K2-Snapshot-Id": str(pinned.snapshot_id) if pinned.snapshot_id is not None else ""}


def _export(request: Request, pinned: Pinned, sql_text: str, params: list, fmt: str, name: str) -> Response:
    lake = _lake(request)
    cursor = lake.cursor()
    headers = {
        **_snapshot_header(pinned),
        "Content-Disposition": f'attachment; filename="{name}.{exports.SUFFIX[fmt]}"',
    }
    return StreamingResponse(
        exports.stream(cursor, sql_text, params, fmt, _route(request)),
        media_type=exports.MEDIA_TYPES[fmt],
        headers=headers,
    )


async def reject_unknown_parameters(request: Request) -> None:
    """A misspelled filter must not silently widen a query: unknown query parameters are a 422."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in dependant.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise unprocessable(
            f"unknown query parameter(s) {', '.join(unknown)[:200]}; "
            f"accepted: {', '.join(sorted(known)) or 'none'}"
        )


# rate_limit depends on authenticate: auth (401/403), then the bucket (429), then parameters (422).
router = APIRouter(prefix="/v1", dependencies=[Depends(rate_limit), Depends(reject_unknown_parameters)])


@router.get("/trades", summary="Silver trades, ordered by (exchange_ts, trade_id); keyset-paginated")
async def get_trades(
    request: Request,
    exchange: Exchange | None = Query(None, description="exchange"),  # type: ignore[valid-type]
    symbol: str | None = Query(None, max_length=40, description=SYMBOL_DOC),
    start: str | None = Query(
        None, max_length=40, description=f"inclusive start, {TIME_DOC}; default end - cap"
    ),
    end: str | None = Query(None, max_length=40, description=f"exclusive end, {TIME_DOC}; default now"),
    side: Literal["BUY", "SELL"] | None = Query(None, description="taker side"),
    limit: int | None = Query(None, ge=1, le=10_000, description="rows per JSON page (default 1000)"),
    cursor: str | None = Query(None, max_length=2048, description="next_cursor of the previous page"),
    as_of: str | None = Query(None, max_length=40, description=AS_OF_DOC),
    format: Format = Query("json", description="json (paged) or a streamed export: csv, parquet, arrow"),
) -> Response:
    settings: QuerySettings = request.app.state.settings
    codec: CursorCodec = request.app.state.cursors
    ex = exchange.value if exchange is not None else None
    check_symbol(symbol)
    if format != "json" and (cursor is not None or limit is not None):
        raise unprocessable("cursor and limit apply to JSON pages; an export streams the whole range")
    page = limit or min(1000, settings.query_max_page_rows)
    if page > settings.query_max_page_rows:
        raise unprocessable(f"limit {page} is above the maximum page of {settings.query_max_page_rows} rows")
    qhash = query_hash("trades", ex, symbol, side, start, end, as_of)
    after = None
    if cursor is not None:
        state = codec.decode(cursor, qhash)
        try:
            _, snapshot_id, start_us, end_us, k_ts, k_id, k_ex, k_sym = state
            pinned = await _pin(_lake(request), SILVER_TRADES, int(snapshot_id))
            lo, hi = from_us(int(start_us)), from_us(int(end_us))
            after = (from_us(int(k_ts)), str(k_id), str(k_ex), str(k_sym))
        except (ValueError, TypeError, OverflowError):
            raise unprocessable("invalid cursor") from None
    else:
        rng = time_range(start, end, settings.query_max_range_days)
        lo, hi = rng.start, rng.end
        pinned = await _pin(_lake(request), SILVER_TRADES, parse_as_of(as_of))
    lo_us, hi_us = to_us(lo), to_us(hi)
    if format != "json":
        text, params = sql.trades_sql(
            pinned,
            lo,
            hi,
            lo_us,
            hi_us,
            ex,
            symbol,
            side,
            None,
            None,
            "text" if format == "csv" else "native",
        )
        return _export(request, pinned, text, params, format, "trades")
    text, params = sql.trades_sql(pinned, lo, hi, lo_us, hi_us, ex, symbol, side, after, page + 1, "native")

    def build(cur: duckdb.DuckDBPyConnection) -> tuple[bytes, int]:
        table = cur.execute(text, params).to_arrow_table()
        more = table.num_rows > page
        table = table.slice(0, page)
        next_cursor = None
        if more:
            last = _last_row(table)
            k_ts, k_id, k_ex, k_sym = (
                to_us(last["exchange_ts"]),
                last["trade_id"],
                last["exchange"],
                last["symbol"],
            )
            next_cursor = codec.encode([qhash, pinned.snapshot_id, lo_us, hi_us, k_ts, k_id, k_ex, k_sym])
        items = jsonrows.json_array_items(table)
        return _page_body(pinned.snapshot_id, items, table.num_rows, next_cursor, {}), table.num_rows

    key = ("trades", pinned.snapshot_id, lo_us, hi_us, ex, symbol, side, after, page)
    fixed = hotpath.cacheable({"start": start, "end": end, "as_of": as_of, "cursor": cursor})
    return await _cached_json(request, key, build, _snapshot_header(pinned), pinned if fixed else None)


@router.get("/ohlcv/{timeframe}", summary="Candles (latest revision of each), ordered by window_start")
async def get_ohlcv(
    request: Request,
    timeframe: Timeframe = Path(description="1m 5m 15m 30m 1h 1d"),  # type: ignore[valid-type]
    exchange: Exchange | None = Query(None),  # type: ignore[valid-type]
    symbol: str | None = Query(None, max_length=40, description=SYMBOL_DOC),
    start: str | None = Query(None, max_length=40, description=f"window_start >= start, {TIME_DOC}"),
    end: str | None = Query(None, max_length=40, description=f"window_start < end, {TIME_DOC}; default now"),
    limit: int | None = Query(None, ge=1, le=10_000, description="rows per JSON page (default 10000)"),
    cursor: str | None = Query(None, max_length=2048, description="next_cursor of the previous page"),
    as_of: str | None = Query(None, max_length=40, description=AS_OF_DOC),
    format: Format = Query("json", description="json (paged) or a streamed export: csv, parquet, arrow"),
) -> Response:
    settings: QuerySettings = request.app.state.settings
    codec: CursorCodec = request.app.state.cursors
    tf = timeframe.value
    ex = exchange.value if exchange is not None else None
    check_symbol(symbol)
    if format != "json" and (cursor is not None or limit is not None):
        raise unprocessable("cursor and limit apply to JSON pages; an export streams the whole range")
    page = limit or settings.query_max_page_rows
    if page > settings.query_max_page_rows:
        raise unprocessable(f"limit {page} is above the maximum page of {settings.query_max_page_rows} rows")
    table = gold_table(tf)
    qhash = query_hash("ohlcv", tf, ex, symbol, start, end, as_of)
    after = None
    if cursor is not None:
        state = codec.decode(cursor, qhash)
        try:
            _, snapshot_id, start_us, end_us, k_ts, k_ex, k_sym = state
            pinned = await _pin(_lake(request), table, int(snapshot_id))
            lo, hi = from_us(int(start_us)), from_us(int(end_us))
            after = (from_us(int(k_ts)), str(k_ex), str(k_sym))
        except (ValueError, TypeError, OverflowError):
            raise unprocessable("invalid cursor") from None
    else:
        rng = time_range(start, end, settings.query_max_range_days)
        lo, hi = rng.start, rng.end
        pinned = await _pin(_lake(request), table, parse_as_of(as_of))
    lo_us, hi_us = to_us(lo), to_us(hi)
    if format != "json":
        text, params = sql.candles_sql(
            pinned, tf, lo, hi, lo_us, hi_us, ex, symbol, None, None, "text" if format == "csv" else "native"
        )
        return _export(request, pinned, text, params, format, f"ohlcv_{tf}")
    text, params = sql.candles_sql(pinned, tf, lo, hi, lo_us, hi_us, ex, symbol, after, page + 1, "native")

    def build(cur: duckdb.DuckDBPyConnection) -> tuple[bytes, int]:
        table = cur.execute(text, params).to_arrow_table()
        more = table.num_rows > page
        table = table.slice(0, page)
        next_cursor = None
        if more:
            last = _last_row(table)
            k_ts, k_ex, k_sym = to_us(last["window_start"]), last["exchange"], last["symbol"]
            next_cursor = codec.encode([qhash, pinned.snapshot_id, lo_us, hi_us, k_ts, k_ex, k_sym])
        items = jsonrows.json_array_items(table)
        extra = {"timeframe": tf}
        return _page_body(pinned.snapshot_id, items, table.num_rows, next_cursor, extra), table.num_rows

    key = ("ohlcv", tf, pinned.snapshot_id, lo_us, hi_us, ex, symbol, after, page)
    fixed = hotpath.cacheable({"start": start, "end": end, "as_of": as_of, "cursor": cursor})
    return await _cached_json(request, key, build, _snapshot_header(pinned), pinned if fixed else None)


@router.get("/ohlcv/{timeframe}/stream", summary="Server-sent events: live candle updates of one symbol")
async def stream_ohlcv(
    request: Request,
    timeframe: Timeframe = Path(),  # type: ignore[valid-type]
    symbol: str = Query(..., max_length=40, description=SYMBOL_DOC),
    exchange: Exchange | None = Query(None, description="one exchange; default every exchange"),  # type: ignore[valid-type]
) -> Response:
    check_symbol(symbol)
    settings: QuerySettings = request.app.state.settings
    try:
        consumer = await live.open_consumer(settings.kafka_bootstrap, settings.query_kafka_timeout_s)
    except Exception as exc:
        log.warning("live stream unavailable: %s", exc)
        raise HTTPException(503, "the live candle stream is unavailable") from None
    events = live.candle_events(
        consumer,
        timeframe.value,
        symbol,
        exchange.value if exchange else None,
        settings.query_sse_heartbeat_s,
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _json_rows(pinned: Pinned, builder: Callable[[Pinned], tuple[str, list]]) -> Callable:
    def build(cur: duckdb.DuckDBPyConnection) -> tuple[bytes, int]:
        text, params = builder(pinned)
        rows = [r[0] for r in cur.execute(text, params).fetchall()]
        return _page_body(pinned.snapshot_id, ",".join(rows).encode(), len(rows), None, {}), len(rows)

    return build


@router.get("/symbols", summary="Every (exchange, symbol) with trades: first/last trade time and count")
async def get_symbols(request: Request) -> Response:
    pinned = await _pin(_lake(request), SILVER_TRADES)
    return await _cached_json(
        request,
        ("symbols", pinned.snapshot_id),
        _json_rows(pinned, sql.symbols_sql),
        _snapshot_header(pinned),
    )


@router.get("/exchanges", summary="Every exchange with trades: symbol count, first/last trade time, count")
async def get_exchanges(request: Request) -> Response:
    pinned = await _pin(_lake(request), SILVER_TRADES)
    return await _cached_json(
        request,
        ("exchanges", pinned.snapshot_id),
        _json_rows(pinned, sql.exchanges_sql),
        _snapshot_header(pinned),
    )


@router.get(
    "/summary/{exchange}/{symbol:path}/{day}",
    summary="A UTC day of one symbol from silver: OHLC, volume, vwap, trade count, buy/sell volume",
)
async def get_summary(
    request: Request,
    exchange: Exchange = Path(),  # type: ignore[valid-type]
    symbol: str = Path(max_length=40, description="BASE/QUOTE (or BASE-QUOTE)"),
    day: str = Path(max_length=20, description="YYYY-MM-DD (UTC)"),
) -> Response:
    symbol = check_symbol(symbol.replace("-", "/")) or ""
    parsed = parse_day(day)
    start = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    pinned = await _pin(_lake(request), SILVER_TRADES)
    ex = exchange.value
    lo_us, hi_us = to_us(start), to_us(end)

    def build(cur: duckdb.DuckDBPyConnection) -> tuple[bytes, int]:
        text, params = sql.summary_sql(pinned, ex, symbol, start, end, lo_us, hi_us)
        count, open_, high, low, close, volume, quote_volume, buy, sell, first_ts, last_ts = cur.execute(
            text, params
        ).fetchone()

        def dec(value: Any) -> str | None:
            return None if value is None else to_text(value)

        body = {
            "exchange": ex,
            "symbol": symbol,
            "date": parsed.isoformat(),
            "snapshot_id": pinned.snapshot_id,
            "trade_count": count,
            "open": dec(open_),
            "high": dec(high),
            "low": dec(low),
            "close": dec(close),
            "volume": dec(volume) if count else "0",
            "quote_volume": dec(quote_volume) if count else "0",
            "vwap": dec(divide(quote_volume, volume)) if count and volume else None,
            "buy_volume": dec(buy),
            "sell_volume": dec(sell),
            "first_trade_ts": first_ts,
            "last_trade_ts": last_ts,
        }
        return orjson.dumps(body), 1 if count else 0

    return await _cached_json(
        request, ("summary", pinned.snapshot_id, ex, symbol, lo_us), build, _snapshot_header(pinned)
    )


@router.get("/snapshots/{table}", summary="Snapshots of a lake table (for as_of time travel)")
async def get_snapshots(request: Request, table: TableName = Path()) -> Response:  # type: ignore[valid-type]
    snapshots = _lake(request).snapshots(table.value)
    if snapshots is None:
        raise HTTPException(404, f"table {table.value} does not exist yet")
    data = [
        {
            "snapshot_id": s.snapshot_id,
            "parent_snapshot_id": s.parent_snapshot_id,
            "timestamp": iso(datetime.fromtimestamp(s.timestamp_ms / 1000, tz=UTC)),
            "timestamp_ms": s.timestamp_ms,
            "operation": s.summary.operation.value if s.summary else None,
            "summary": dict(s.summary.additional_properties) if s.summary else {},
        }
        for s in snapshots
    ]
    metrics.ROWS.labels(_route(request)).inc(len(data))
    return Response(
        orjson.dumps({"table": table.value, "count": len(data), "data": data}), media_type="application/json"
    )


def create_app(settings: QuerySettings | None = None, lake: Lake | None = None) -> FastAPI:
    settings = settings or QuerySettings()
    security = Security(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.lake is None
        if own:
            app.state.lake = Lake(settings)
        the_lake: Lake = app.state.lake
        await asyncio.get_running_loop().run_in_executor(the_lake.executor, the_lake.refresh)
        refresher = asyncio.create_task(the_lake.refresh_forever())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if own:
                the_lake.close()

    app = QueryAPI(
        title="K2 query API",
        version="0.1.0",
        lifespan=lifespan,
        description="Trades and candles of the K2 lake (Iceberg, read with DuckDB). Decimals are "
        "exact JSON strings; every response reads one snapshot per table.",
    )
    app.state.settings = settings
    app.state.security = security
    app.state.lake = lake
    secret = settings.query_cursor_secret.encode() or secrets.token_bytes(32)
    app.state.cursors = CursorCodec(secret)
    app.include_router(router)

    @app.exception_handler(QueryTimeout)
    async def _timeout(_: Request, exc: QueryTimeout) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=504)

    @app.exception_handler(UnknownSnapshot)
    async def _unknown_snapshot(_: Request, exc: UnknownSnapshot) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(duckdb.Error)
    async def _duckdb_error(_: Request, exc: duckdb.Error) -> JSONResponse:
        log.exception("DuckDB error", exc_info=exc)
        return JSONResponse({"detail": "query failed"}, status_code=500)

    @app.get("/health", tags=["ops"], summary="Alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], summary="Catalog reachable and the tables exist")
    async def ready(request: Request) -> JSONResponse:
        the_lake: Lake = request.app.state.lake
        fresh = the_lake.last_refresh_ok > 0 and time.monotonic() - the_lake.last_refresh_ok < max(
            10.0, 10 * settings.query_refresh_s
        )
        required = [SILVER_TRADES, *(gold_table(tf) for tf in TIMEFRAMES)]
        tables = {name: (the_lake.table(name) is not None) for name in required}
        ok = fresh and all(tables.values())
        body = {
            "status": "ready" if ok else "not ready",
            "catalog": "ok" if fresh else (the_lake.last_refresh_error or "not refreshed"),
            "tables": tables,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    app.hot = hotpath.HotPath(app)
    origins = settings.cors_origins()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key"],
            expose_headers=["X-K2-Snapshot-Id", "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware)
    return app
