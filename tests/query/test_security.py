"""API keys, rate limits, validation (422), injection attempts, query timeout (504), CORS."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from services.query.app import create_app
from tests.query.conftest import settings_for

START, END = "2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z"


@pytest.fixture(scope="module")
def secured(known_lake, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("# operators\ngamma\n\n")
    settings = settings_for(
        known_lake.data_dir,
        query_auth_enabled=True,
        query_api_keys="alpha, beta",
        query_api_keys_file=keys_file,
        query_rate_limit_per_s=0.01,
        query_rate_limit_burst=3,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_keys_from_env_and_file(secured):
    assert secured.get("/v1/exchanges").status_code == 401
    assert secured.get("/v1/exchanges", headers={"X-API-Key": "wrong"}).status_code == 403
    assert secured.get("/v1/exchanges", headers={"X-API-Key": "alpha"}).status_code == 200
    assert secured.get("/v1/exchanges", headers={"X-API-Key": "gamma"}).status_code == 200
    # Authentication comes before validation: a bad parameter without a key is still a 401.
    assert secured.get("/v1/ohlcv/7m").status_code == 401
    assert secured.get("/health").status_code == 200  # ops endpoints stay open


def test_rate_limit_per_key_answers_429_with_retry_after(secured):
    statuses = [secured.get("/v1/exchanges", headers={"X-API-Key": "beta"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = secured.get("/v1/exchanges", headers={"X-API-Key": "beta"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    # Another key has its own bucket; refused requests do not reach the endpoint.
    assert secured.get("/v1/symbols", headers={"X-API-Key": "gamma"}).status_code == 200
    assert "k2_query_rate_limited_total" in secured.get("/metrics").text


def test_auth_on_without_keys_refuses_to_start(known_lake):
    with pytest.raises(ValueError, match="no key"):
        create_app(settings_for(known_lake.data_dir, query_auth_enabled=True))


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/v1/ohlcv/7m", {}, "timeframe"),
        ("/v1/trades", {"start": "2024-13-45"}, "start"),
        ("/v1/trades", {"start": "yesterday"}, "start"),
        ("/v1/trades", {"start": END, "end": START}, "before end"),
        ("/v1/ohlcv/1m", {"start": START, "end": START}, "before end"),
        ("/v1/trades", {"limit": 10_001}, "limit"),
        ("/v1/trades", {"limit": 0}, "limit"),
        ("/v1/trades", {"start": "2020-01-01", "end": "2024-01-01"}, "cap"),
        ("/v1/trades", {"exchange": "nyse"}, "exchange"),
        ("/v1/trades", {"side": "HOLD"}, "side"),
        ("/v1/trades", {"symbol": "btcusdt"}, "symbol"),
        ("/v1/trades", {"as_of": "last tuesday"}, "as_of"),
        ("/v1/trades", {"format": "xlsx"}, "format"),
        ("/v1/trades", {"format": "csv", "limit": 5}, "export"),
        ("/v1/summary/binance/BTC/USDT/2024-02-30", {}, "date"),
        ("/v1/summary/binance/BTC/USDT/9999-12-31", {}, "date"),
        ("/v1/trades", {"end": "1e300"}, "end"),
        ("/v1/snapshots/users", {}, "table"),
    ],
)
def test_bad_parameters_are_422_with_a_clear_message(client, path, params, needle):
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert needle in response.text


INJECTIONS = [
    "BTC/USDT'; DROP TABLE silver_trades; --",
    "' OR '1'='1",
    'binance" OR 1=1 --',
    "1; SELECT * FROM read_parquet('/etc/passwd')",
    "$(rm -rf /)",
    "\\x00",
    "%27%20OR%201=1",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_parameter_is_4xx_and_leaks_nothing(client, known_lake, payload):
    total = len(known_lake.trades)
    for name in ("exchange", "symbol", "start", "end", "side", "limit", "cursor", "as_of", "format"):
        for path in ("/v1/trades", "/v1/ohlcv/1m"):
            response = client.get(path, params={name: payload})
            assert 400 <= response.status_code < 500, (path, name, response.status_code, response.text)
            assert "trade_id" not in response.text and "window_start" not in response.text
    for path in (
        f"/v1/ohlcv/{payload}",
        f"/v1/snapshots/{payload}",
        f"/v1/summary/binance/{payload}/2024-03-01",
        f"/v1/summary/{payload}/BTC/USDT/2024-03-01",
        f"/v1/summary/binance/BTC/USDT/{payload}",
    ):
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    # The lake is untouched.
    rows = client.get("/v1/trades", params={"start": START, "end": "2024-03-03", "limit": 10_000}).json()
    assert rows["count"] == total


def test_cursor_tampering_is_rejected(client):
    first = client.get("/v1/trades", params={"start": START, "end": END, "limit": 5}).json()
    cursor = first["next_cursor"]
    payload, signature = cursor.split(".")
    forged_state = base64.urlsafe_b64encode(b'["x",1,0,9999999999999999,0,"1","binance","BTC/USDT"]')
    for bad in (
        cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
        payload,
        "garbage",
        forged_state.decode().rstrip("=") + "." + signature,
        cursor + "'; DROP TABLE x; --",
    ):
        response = client.get("/v1/trades", params={"start": START, "end": END, "limit": 5, "cursor": bad})
        assert response.status_code == 422 and "cursor" in response.text
    # A genuine cursor used with other filters is refused too.
    other = client.get(
        "/v1/trades", params={"symbol": "BTC/USDT", "start": START, "end": END, "limit": 5, "cursor": cursor}
    )
    assert other.status_code == 422 and "different query" in other.text


def test_query_timeout_is_504(known_lake):
    settings = settings_for(known_lake.data_dir, query_timeout_s=1e-6)
    with TestClient(create_app(settings)) as slow:
        response = slow.get("/v1/trades", params={"start": START, "end": END})
        assert response.status_code == 504
        assert 'k2_query_duckdb_errors_total{kind="timeout"}' in slow.get("/metrics").text


def test_cors_is_configurable(known_lake, client):
    settings = settings_for(known_lake.data_dir, query_cors_origins="https://dash.example")
    with TestClient(create_app(settings)) as cors:
        response = cors.get("/health", headers={"Origin": "https://dash.example"})
        assert response.headers["access-control-allow-origin"] == "https://dash.example"
        assert (
            "access-control-allow-origin"
            not in cors.get("/health", headers={"Origin": "https://evil"}).headers
        )
    assert (
        "access-control-allow-origin"
        not in client.get("/health", headers={"Origin": "https://dash.example"}).headers
    )
