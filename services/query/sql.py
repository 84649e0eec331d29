"""SQL of every endpoint. Only constants and `?` placeholders: client values are always bound parameters.

Each builder returns (sql, params) over a pinned table's files; `mode` picks the projection:
`text` (CSV: plain text columns), `native` (JSON pages via services.query.jsonrows, Parquet/Arrow:
decimal(38,18) and timestamp[us, UTC] as stored).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from services.common.tables import SILVER_TRADES
from services.query.lake import Lake, Pinned

Mode = Literal["text", "native"]

ISO_FMT = "'%Y-%m-%dT%H:%M:%S.%fZ'"
TRADE_COLUMNS = (
    "exchange",
    "symbol",
    "exchange_symbol",
    "trade_id",
    "exchange_ts",
    "received_at",
    "price",
    "quantity",
    "quote_quantity",
    "side",
    "source_topic",
    "source_partition",
    "source_offset",
)
CANDLE_COLUMNS = (
    "exchange",
    "symbol",
    "window_start",
    "window_end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "vwap",
    "buy_volume",
    "sell_volume",
    "first_trade_ts",
    "last_trade_ts",
    "revision",
)
_DECIMALS = {
    "price",
    "quantity",
    "quote_quantity",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "buy_volume",
    "sell_volume",
}
_TIMES = {"exchange_ts", "received_at", "window_start", "window_end", "first_trade_ts", "last_trade_ts"}


def dec_text(column: str) -> str:
    """Exact plain text of a decimal(38,18) column without trailing fractional zeros."""
    return f"rtrim(rtrim(CAST({column} AS VARCHAR), '0'), '.')"


def time_text(column: str) -> str:
    return f"strftime({column}, {ISO_FMT})"


def _text(column: str) -> str:
    if column in _DECIMALS:
        return dec_text(column)
    if column in _TIMES:
        return time_text(column)
    return column


def projection(columns: tuple[str, ...], mode: Mode, extra: dict[str, str] | None = None) -> str:
    extra = extra or {}
    if mode == "native":
        return ", ".join([*(f"{v} AS {k}" for k, v in extra.items()), *columns])
    return ", ".join([*(f"{v} AS {k}" for k, v in extra.items()), *(f"{_text(c)} AS {c}" for c in columns)])


def source(pinned: Pinned, lo_us: int | None, hi_us: int | None) -> tuple[str, list]:
    files, any_files = pinned.source(lo_us, hi_us)
    if not any_files:
        return Lake.empty_relation(pinned.table), []
    return "read_parquet(?)", [files]


def trades_sql(
    pinned: Pinned,
    start: datetime,
    end: datetime,
    lo_us: int,
    hi_us: int,
    exchange: str | None,
    symbol: str | None,
    side: str | None,
    after: tuple[datetime, str, str, str] | None,
    limit: int | None,
    mode: Mode,
) -> tuple[str, list]:
    src, params = source(pinned, lo_us, hi_us)
    where = ["exchange_ts >= ?", "exchange_ts < ?"]
    params += [start, end]
    for column, value in (("exchange", exchange), ("symbol", symbol), ("side", side)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if after is not None:
        ts, trade_id, ex, sym = after
        where.append(
            "(exchange_ts > ? OR (exchange_ts = ? AND (trade_id > ? OR (trade_id = ? AND "
            "(exchange > ? OR (exchange = ? AND symbol > ?))))))"
        )
        params += [ts, ts, trade_id, trade_id, ex, ex, sym]
    sql = (
        f"SELECT {projection(TRADE_COLUMNS, mode)} FROM {src} "
        f"WHERE {' AND '.join(where)} ORDER BY exchange_ts, trade_id, exchange, symbol"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def candles_sql(
    pinned: Pinned,
    timeframe: str,
    start: datetime,
    end: datetime,
    lo_us: int,
    hi_us: int,
    exchange: str | None,
    symbol: str | None,
    after: tuple[datetime, str, str] | None,
    limit: int | None,
    mode: Mode,
) -> tuple[str, list]:
    """Latest revision of each candle (defensive: the lake writer already keeps only the latest visible)."""
    src, params = source(pinned, lo_us, hi_us)
    where = ["window_start >= ?", "window_start < ?"]
    params += [start, end]
    for column, value in (("exchange", exchange), ("symbol", symbol)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    outer = ""
    if after is not None:
        ts, ex, sym = after
        outer = (
            "WHERE (window_start > ? OR (window_start = ? AND (exchange > ? OR (exchange = ? AND "
            "symbol > ?))))"
        )
        params += [ts, ts, ex, ex, sym]
    extra = {"timeframe": "CAST(? AS VARCHAR)"}
    sql = (
        f"SELECT {projection(CANDLE_COLUMNS, mode, extra)} FROM ("
        f"SELECT * FROM {src} WHERE {' AND '.join(where)} "
        f"QUALIFY row_number() OVER (PARTITION BY exchange, symbol, window_start "
        f"ORDER BY revision DESC) = 1"
        f") {outer} ORDER BY window_start, exchange, symbol"
    )
    # The timeframe placeholder comes first in the SELECT list: bind it first.
    params = [timeframe, *params]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


_SPAN = f"'first_trade_ts', {time_text('min(exchange_ts)')}, 'last_trade_ts', {time_text('max(exchange_ts)')}"


def symbols_sql(pinned: Pinned) -> tuple[str, list]:
    src, params = source(pinned, None, None)
    return (
        f"SELECT json_object('exchange', exchange, 'symbol', symbol, "
        f"{_SPAN}, "
        f"'trade_count', count(*)) FROM {src} GROUP BY exchange, symbol ORDER BY exchange, symbol",
        params,
    )


def exchanges_sql(pinned: Pinned) -> tuple[str, list]:
    src, params = source(pinned, None, None)
    return (
        f"SELECT json_object('exchange', exchange, 'symbol_count', count(DISTINCT symbol), "
        f"{_SPAN}, "
        f"'trade_count', count(*)) FROM {src} GROUP BY exchange ORDER BY exchange",
        params,
    )


# Order of trades inside a period, as services.common.schemas.trade_order_key: numeric ids as numbers.
_ORDER = (
    "exchange_ts, CASE WHEN regexp_full_match(trade_id, '[0-9]{1,38}') THEN 0 ELSE 1 END, "
    "TRY_CAST(trade_id AS HUGEINT), trade_id"
)


def summary_sql(
    pinned: Pinned, exchange: str, symbol: str, start: datetime, end: datetime, lo_us: int, hi_us: int
) -> tuple[str, list]:
    assert pinned.table == SILVER_TRADES
    src, params = source(pinned, lo_us, hi_us)
    sql = (
        f"SELECT count(*), first(price ORDER BY {_ORDER}), max(price), min(price), "
        f"last(price ORDER BY {_ORDER}), sum(quantity), sum(quote_quantity), "
        f"coalesce(sum(quantity) FILTER (WHERE side = 'BUY'), 0), "
        f"coalesce(sum(quantity) FILTER (WHERE side = 'SELL'), 0), "
        f"{time_text('min(exchange_ts)')}, {time_text('max(exchange_ts)')} "
        f"FROM {src} WHERE exchange = ? AND symbol = ? AND exchange_ts >= ? AND exchange_ts < ?"
    )
    return sql, [*params, exchange, symbol, start, end]
