"""`python -m services.query` runs as a real process: ready over the lake, /metrics served, clean SIGTERM.

It runs with two worker processes (the default K2_QUERY_PROCESSES): every request below opens a new
connection, so requests land on either worker; cursors, rate limits and metrics must still be one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.common.metrics import free_port
from tests.kafka_helpers import wait_for
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
        "K2_QUERY_PROCESSES": "2",
        "K2_QUERY_RATE_LIMIT_PER_S": "0.01",
        "K2_QUERY_RATE_LIMIT_BURST": "12",
    }
    key = {"X-API-Key": "ops-key"}
    service = ServiceProcess("services.query", env=env, log_dir=tmp_path, name="query")
    with service:
        service.wait_http(f"{base}/metrics")
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/symbols", timeout=10).status_code == 401
        symbols = httpx.get(f"{base}/v1/symbols", headers=key, timeout=30)
        assert symbols.status_code == 200 and symbols.json()["count"] == 4
        spent = 1
        # A cursor made by one worker is accepted by the other (one signing secret).
        params = {"start": "2024-03-01", "end": "2024-03-03", "limit": 500}
        rows, cursor = 0, None
        while True:
            page = httpx.get(
                f"{base}/v1/trades",
                params={**params, "cursor": cursor} if cursor else params,
                headers=key,
                timeout=30,
            )
            spent += 1
            assert page.status_code == 200, page.text
            rows += page.json()["count"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert rows == len(known_lake.trades)
        # One bucket per key across both workers: exactly the rest of the burst passes.
        statuses = [httpx.get(f"{base}/v1/exchanges", headers=key, timeout=30).status_code for _ in range(16)]
        assert statuses == [200] * (12 - spent) + [429] * (4 + spent)
        metrics = scrape(f"{base}/metrics")  # summed over the workers
        assert 'k2_query_requests_total{route="/v1/symbols",status="401"} 1.0' in metrics
        assert f'k2_query_requests_total{{route="/v1/exchanges",status="429"}} {4.0 + spent}' in metrics
        assert service.stop() == 0


def test_a_configuration_error_stops_the_service_with_an_error(tmp_path):
    """Checked once before the workers start (a worker failing at startup would be restarted forever)."""
    env = {
        **os.environ,
        "K2_DATA_DIR": str(tmp_path),
        "K2_QUERY_PORT": str(free_port()),
        "K2_QUERY_PROCESSES": "2",
        "K2_QUERY_AUTH_ENABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.query"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "no key is configured" in done.stderr


async def test_workers_stop_when_the_supervisor_is_killed(known_lake, tmp_path):
    port = free_port()
    env = {"K2_DATA_DIR": str(known_lake.data_dir), "K2_QUERY_PORT": str(port), "K2_QUERY_PROCESSES": "2"}
    service = ServiceProcess("services.query", env=env, log_dir=tmp_path, name="query-kill")
    with service:
        service.wait_http(f"http://127.0.0.1:{port}/metrics")
        assert service.proc is not None
        parent = service.proc.pid
        workers = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        assert len(workers) >= 2
        os.kill(parent, signal.SIGKILL)  # only the supervisor, not its process group
        service.proc.wait()
        try:
            await wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        finally:
            for pid in workers:  # never leave an orphan behind, even when the test fails
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
