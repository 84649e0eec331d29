"""The cached-response fast path: same answers as the route, never stale, and auth/rate limits/CORS kept."""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient

from bench.query_data import DAY0_US, make_trades
from services.common.catalog import open_catalog
from services.lakewriter.writer import append_trades
from services.query.app import create_app
from services.query.hotpath import accepts_gzip
from services.query.lake import LRU
from services.query.settings import QuerySettings
from services.query.shared_buckets import SharedTokenBuckets
from tests.kafka_helpers import wait_for
from tests.query.conftest import build_lake, settings_for

DAY = {"exchange": "binance", "symbol": "BTC/USDT", "start": "2024-03-01", "end": "2024-03-02"}


def _metric(client: TestClient, sample: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _result_misses(client: TestClient) -> float:
    return _metric(client, 'k2_query_cache_misses_total{cache="result"}')


CANDLE_REQUESTS = 'k2_query_requests_total{route="/v1/ohlcv/{timeframe}",status="200"}'
CANDLE_LATENCIES = 'k2_query_request_duration_seconds_count{route="/v1/ohlcv/{timeframe}"}'
CANDLE_ROWS = 'k2_query_rows_returned_total{route="/v1/ohlcv/{timeframe}"}'


def test_a_repeated_read_is_served_without_the_route_and_is_identical(client):
    first = client.get("/v1/ohlcv/1m", params=DAY)
    assert first.status_code == 200 and first.json()["count"] > 0
    lake = client.app.state.lake
    lake.results = LRU(lake.results.max_size, "result")  # forget the route's cache: a route call would miss
    misses = _result_misses(client)
    counted = [_metric(client, name) for name in (CANDLE_REQUESTS, CANDLE_LATENCIES, CANDLE_ROWS)]
    again = client.get("/v1/ohlcv/1m", params=DAY)
    assert again.content == first.content
    # counted like any request: one more request and latency sample, its rows
    assert [_metric(client, name) for name in (CANDLE_REQUESTS, CANDLE_LATENCIES, CANDLE_ROWS)] == [
        counted[0] + 1,
        counted[1] + 1,
        counted[2] + first.json()["count"],
    ]
    assert (
        again.headers["x-k2-snapshot-id"]
        == first.headers["x-k2-snapshot-id"]
        == str(first.json()["snapshot_id"])
    )
    assert again.headers["content-type"] == "application/json"
    assert _result_misses(client) == misses  # answered by the fast path, not by DuckDB
    metrics = client.get("/metrics").text
    assert 'k2_query_requests_total{route="/v1/ohlcv/{timeframe}",status="200"}' in metrics


# a query string no other test of the module's shared client asks for
GZIP_DAY = {**DAY, "end": "2024-03-01T23:00:00Z"}


def _raw_get(client: TestClient, accept_encoding: str | None):
    """A GET whose body is left as sent (httpx would otherwise ask for gzip and inflate it)."""
    headers = {"Accept-Encoding": accept_encoding or "identity"}
    with client.stream("GET", "/v1/ohlcv/1m", params=GZIP_DAY, headers=headers) as response:
        return response.status_code, response.headers, b"".join(response.iter_raw())


async def test_a_repeated_read_goes_out_gzipped_to_a_client_that_accepts_it(client):
    _, plain_headers, plain = _raw_get(client, None)  # stored by the route; sent as it is
    assert plain_headers["vary"] == "Accept-Encoding" and "content-encoding" not in plain_headers
    [(entry, _size)] = [v for k, v in client.app.state.lake.responses._data.items() if b"T23" in k[1]]
    assert entry.gzipped is None  # nothing compressed for a query asked once

    # the first repeat that offers gzip starts the compression; later ones get it
    def gzipped_answer():
        status, headers, body = _raw_get(client, "br;q=1.0, gzip;q=0.8")
        assert status == 200 and headers["vary"] == "Accept-Encoding"
        return (headers, body) if headers.get("content-encoding") == "gzip" else None

    await wait_for(gzipped_answer, timeout=10, interval=0.05, message="a gzipped answer")
    headers, body = gzipped_answer()
    assert int(headers["content-length"]) == len(body) < len(plain) / 3
    assert gzip.decompress(body) == plain
    # refused (q=0) or not offered: the identity body
    for refusal in ("gzip;q=0", "deflate", None):
        status, headers, body = _raw_get(client, refusal)
        assert status == 200 and "content-encoding" not in headers and body == plain


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=nonsense", False),
        ("gzip;q=0, *", False),
        ("*;q=0, gzip", True),
        ("*;q=0", False),
        ("deflate, *;q=0.1", True),
        ("identity", False),
        ("gzipped", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(header, accepted):
    assert accepts_gzip(header) is accepted


def test_only_deterministic_reads_enter_the_fast_path(client):
    client.get("/v1/trades", params={"exchange": "binance", "start": "2024-03-01"})  # no end: "now" moves
    client.get("/v1/trades", params={**DAY, "as_of": "2024-03-05T00:00:00Z"})
    page = client.get("/v1/trades", params={**DAY, "limit": 5}).json()
    assert (
        client.get("/v1/trades", params={**DAY, "limit": 5, "cursor": page["next_cursor"]}).status_code == 200
    )
    stored = [key[1] for key in client.app.state.lake.responses._data if key[0] == "/v1/trades"]
    assert any(b"limit=5" in query for query in stored)
    assert all(b"end=" in query and b"as_of" not in query and b"cursor" not in query for query in stored)


async def test_the_fast_path_never_serves_an_old_snapshot(tmp_path):
    lake = build_lake(tmp_path, per_market=40)
    catalog = open_catalog(QuerySettings(data_dir=lake.data_dir))
    params = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-04T00:00:00Z", "limit": 10_000}
    with TestClient(create_app(settings_for(lake.data_dir, query_refresh_s=0.05))) as client:
        first = client.get("/v1/trades", params=params).json()
        assert client.get("/v1/trades", params=params).json() == first  # a fast-path hit
        extra = make_trades(
            7, start_us=DAY0_US + 3600_000_000, span_us=3600_000_000, seed=5, id_base=8_000_000
        )
        new_snapshot = append_trades(catalog, extra).snapshot_id
        the_lake = client.app.state.lake
        await wait_for(lambda: the_lake.current_ids.get("silver_trades") == new_snapshot, timeout=30)
        fresh = client.get("/v1/trades", params=params).json()
        assert fresh["snapshot_id"] == new_snapshot != first["snapshot_id"]
        assert fresh["count"] == first["count"] + len(extra)


def test_cached_answers_keep_auth_rate_limits_and_cors(known_lake):
    settings = settings_for(
        known_lake.data_dir,
        query_auth_enabled=True,
        query_api_keys="alpha,beta",
        query_rate_limit_per_s=0.01,
        query_rate_limit_burst=3,
        query_cors_origins="https://dash.example",
    )
    with TestClient(create_app(settings)) as secured:
        alpha = {"X-API-Key": "alpha", "Origin": "https://dash.example"}
        assert secured.get("/v1/ohlcv/1h", params=DAY, headers=alpha).status_code == 200  # stored
        assert secured.get("/v1/ohlcv/1h", params=DAY).status_code == 401
        assert secured.get("/v1/ohlcv/1h", params=DAY, headers={"X-API-Key": "wrong"}).status_code == 403
        cached = secured.get("/v1/ohlcv/1h", params=DAY, headers=alpha)
        assert cached.status_code == 200
        assert cached.headers["access-control-allow-origin"] == "https://dash.example"
        assert secured.get("/v1/ohlcv/1h", params=DAY, headers=alpha).status_code == 200  # 3rd token
        refused = secured.get("/v1/ohlcv/1h", params=DAY, headers=alpha)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert secured.get("/v1/ohlcv/1h", params=DAY, headers={"X-API-Key": "beta"}).status_code == 200


def test_shared_buckets_are_one_limit_for_every_process(tmp_path):
    path = tmp_path / "buckets"
    # Two independent mappings of one file, as two worker processes have.
    first, second = SharedTokenBuckets(path, 0.01, 4), SharedTokenBuckets(path, 0.01, 4)
    waits = [(first if i % 2 else second).take("key:a") for i in range(6)]
    assert waits[:4] == [0.0] * 4 and all(w > 1 for w in waits[4:])
    assert first.take("key:b") == 0.0  # another principal has its own bucket
    unlimited = SharedTokenBuckets(tmp_path / "other", 0.0, 1)
    assert all(unlimited.take("key:a") == 0.0 for _ in range(10))
    for buckets in (first, second, unlimited):
        buckets.close()


def test_shared_buckets_evict_the_longest_idle_when_full(tmp_path):
    buckets = SharedTokenBuckets(tmp_path / "buckets", 0.01, 1, slots=4, probes=4)
    for i in range(4):
        assert buckets.take(f"p{i}") == 0.0
    assert buckets.take("p0") > 0  # still remembered: its bucket is empty
    assert buckets.take("p-new") == 0.0  # a fifth principal takes the longest-idle slot
    buckets.close()
