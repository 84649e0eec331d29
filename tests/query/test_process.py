"""`python -m services.query` runs as a real process: ready over the lake, /metrics served, clean SIGTERM."""

from __future__ import annotations

import httpx

from services.common.metrics import free_port
from tests.processes import ServiceProcess, scrape


def test_service_process_serves_and_stops_cleanly(known_lake, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "K2_DATA_DIR": str(known_lake.data_dir),
        "K2_QUERY_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        "K2_QUERY_AUTH_ENABLED": "true",
        "K2_QUERY_API_KEYS": "ops-key",
    }
    service = ServiceProcess("services.query", env=env, log_dir=tmp_path, name="query")
    with service:
        service.wait_http(f"{base}/metrics")
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/symbols", timeout=10).status_code == 401
        symbols = httpx.get(f"{base}/v1/symbols", headers={"X-API-Key": "ops-key"}, timeout=30)
        assert symbols.status_code == 200 and symbols.json()["count"] == 4
        assert 'k2_query_requests_total{route="/v1/symbols",status="401"}' in scrape(f"{base}/metrics")
        assert service.stop() == 0
