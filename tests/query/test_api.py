"""Every endpoint's values against a direct computation over the known data written by the lake writer."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from bench.query_data import DAY0_US, DAY_US
from services.common.decimals import add, divide, to_text
from services.common.schemas import trade_order_key
from tests.query.expected import candle_json, candle_sort_key, iso_us, trade_json, trade_sort_key

START, END = "2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z"


def fetch_all(client, path: str, params: dict) -> tuple[list[dict], int]:
    """Follow next_cursor to the end; returns the rows and the number of pages."""
    rows: list[dict] = []
    pages = 0
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["data"])
        rows += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, pages


def test_trades_pagination_returns_every_row_once_in_order(client, known_lake):
    rows, pages = fetch_all(client, "/v1/trades", {"start": START, "end": END, "limit": 97})
    expected = [trade_json(t) for t in sorted(known_lake.trades, key=trade_sort_key)]
    assert pages == -(-len(expected) // 97)
    assert rows == expected
    keys = [(r["exchange"], r["symbol"], r["trade_id"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_trades_filters_and_half_open_range(client, known_lake):
    first = sorted(known_lake.trades, key=trade_sort_key)[10]
    start_us, end_us = first.exchange_ts, first.exchange_ts + 3 * 3600 * 1_000_000
    params = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "SELL",
        "start": str(start_us),
        "end": iso_us(end_us),
        "limit": 10_000,
    }
    body = client.get("/v1/trades", params=params).json()
    expected = [
        trade_json(t)
        for t in sorted(known_lake.trades, key=trade_sort_key)
        if t.exchange == "binance"
        and t.symbol == "BTC/USDT"
        and t.side == "SELL"
        and start_us <= t.exchange_ts < end_us
    ]
    assert expected and body["data"] == expected
    assert body["next_cursor"] is None


def test_unknown_symbol_is_an_empty_result(client):
    for path in ("/v1/trades", "/v1/ohlcv/1m"):
        response = client.get(path, params={"symbol": "NOPE/USDT", "start": START, "end": END})
        assert response.status_code == 200
        assert response.json()["data"] == []


def test_ohlcv_every_timeframe_equals_candles_from_trades(client, known_lake):
    for tf, candles in known_lake.candles_now.items():
        rows, _ = fetch_all(client, f"/v1/ohlcv/{tf}", {"start": START, "end": END, "limit": 500})
        assert rows == [candle_json(c) for c in sorted(candles, key=candle_sort_key)], tf


def test_ohlcv_serves_the_latest_revision_of_one_symbol_day(client, known_lake):
    body = client.get(
        "/v1/ohlcv/1m",
        params={"exchange": "kraken", "symbol": "BTC/USD", "start": "2024-03-01", "end": "2024-03-02"},
    ).json()
    expected = [
        c
        for c in known_lake.candles_now["1m"]
        if c.exchange == "kraken" and c.symbol == "BTC/USD" and DAY0_US <= c.window_start < DAY0_US + DAY_US
    ]
    assert body["data"] == [candle_json(c) for c in sorted(expected, key=candle_sort_key)]
    assert any(row["revision"] == 1 for row in body["data"])
    assert body["snapshot_id"] == known_lake.gold_snapshots["1m"][-1]


def test_symbols_and_exchanges(client, known_lake):
    by_symbol: dict[tuple[str, str], list[int]] = defaultdict(list)
    for t in known_lake.trades:
        by_symbol[(t.exchange, t.symbol)].append(t.exchange_ts)
    expected = [
        {
            "exchange": ex,
            "symbol": sym,
            "first_trade_ts": iso_us(min(ts)),
            "last_trade_ts": iso_us(max(ts)),
            "trade_count": len(ts),
        }
        for (ex, sym), ts in sorted(by_symbol.items())
    ]
    assert client.get("/v1/symbols").json()["data"] == expected
    exchanges = client.get("/v1/exchanges").json()["data"]
    assert [e["exchange"] for e in exchanges] == sorted({t.exchange for t in known_lake.trades})
    for entry in exchanges:
        mine = [t for t in known_lake.trades if t.exchange == entry["exchange"]]
        assert entry == {
            "exchange": entry["exchange"],
            "symbol_count": len({t.symbol for t in mine}),
            "first_trade_ts": iso_us(min(t.exchange_ts for t in mine)),
            "last_trade_ts": iso_us(max(t.exchange_ts for t in mine)),
            "trade_count": len(mine),
        }


def test_summary_equals_direct_computation(client, known_lake):
    for exchange, symbol in (("binance", "BTC/USDT"), ("coinbase", "BTC/USD")):
        day = [
            t
            for t in known_lake.trades
            if t.exchange == exchange
            and t.symbol == symbol
            and DAY0_US + DAY_US <= t.exchange_ts < DAY0_US + 2 * DAY_US
        ]
        day.sort(key=lambda t: trade_order_key(t.exchange_ts, t.trade_id))
        volume = quote = buy = sell = 0
        for t in day:
            volume, quote = add(volume, t.quantity), add(quote, t.quote_quantity)
            if t.side == "BUY":
                buy = add(buy, t.quantity)
            else:
                sell = add(sell, t.quantity)
        body = client.get(f"/v1/summary/{exchange}/{symbol}/2024-03-02").json()
        assert body["trade_count"] == len(day) > 0
        assert body["open"] == to_text(day[0].price) and body["close"] == to_text(day[-1].price)
        assert body["high"] == to_text(max(t.price for t in day))
        assert body["low"] == to_text(min(t.price for t in day))
        assert (body["volume"], body["quote_volume"]) == (to_text(volume), to_text(quote))
        assert body["vwap"] == to_text(divide(quote, volume))
        assert (body["buy_volume"], body["sell_volume"]) == (to_text(buy), to_text(sell))
        # The same day spelled BASE-QUOTE answers the same.
        assert client.get(f"/v1/summary/{exchange}/{symbol.replace('/', '-')}/2024-03-02").json() == body
    empty = client.get("/v1/summary/kraken/NOPE/USD/2024-03-02").json()
    assert empty["trade_count"] == 0 and empty["open"] is None


def test_time_travel_trades_by_snapshot_id_and_time(client, known_lake):
    first, second = known_lake.trade_snapshots
    old, _ = fetch_all(client, "/v1/trades", {"start": START, "end": END, "limit": 10_000, "as_of": first})
    assert old == [trade_json(t) for t in sorted(known_lake.batch1, key=trade_sort_key)]
    snaps = {s["snapshot_id"]: s for s in client.get("/v1/snapshots/silver_trades").json()["data"]}
    assert list(snaps) == [first, second]
    at = datetime.fromtimestamp(snaps[first]["timestamp_ms"] / 1000, tz=UTC).isoformat()
    by_time, _ = fetch_all(client, "/v1/trades", {"start": START, "end": END, "limit": 10_000, "as_of": at})
    assert by_time == old
    now, _ = fetch_all(client, "/v1/trades", {"start": START, "end": END, "limit": 10_000, "as_of": second})
    assert len(now) == len(known_lake.trades)


def test_time_travel_candles_returns_the_old_revision(client, known_lake):
    before = known_lake.gold_snapshots["1m"][0]
    rows, _ = fetch_all(client, "/v1/ohlcv/1m", {"start": START, "end": END, "as_of": before})
    assert rows == [candle_json(c) for c in sorted(known_lake.candles_v0["1m"], key=candle_sort_key)]
    assert client.get("/v1/ohlcv/1m", params={"as_of": "12345"}).status_code == 404


def test_health_ready_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    for _ in range(2):
        client.get("/v1/ohlcv/1h", params={"symbol": "BTC/USDT", "start": START, "end": END})
    text = client.get("/metrics").text
    assert 'k2_query_requests_total{route="/v1/ohlcv/{timeframe}",status="200"}' in text
    assert 'k2_query_request_duration_seconds_bucket{le="0.01",route="/v1/ohlcv/{timeframe}"}' in text
    assert 'k2_query_rows_returned_total{route="/v1/ohlcv/{timeframe}"}' in text
    hit_line = 'k2_query_cache_hits_total{cache="result"}'
    hits = [line for line in text.splitlines() if line.startswith(hit_line)]
    assert hits and float(hits[0].split()[-1]) >= 1
    assert "k2_query_duckdb_errors_total" in text
