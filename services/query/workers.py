"""Several uvicorn worker processes on one port (`K2_QUERY_PROCESSES` > 1).

One Python process serves HTTP on one core; the workers share the listening socket, so the kernel
spreads connections over them. What must stay *one* across workers is prepared here by the parent
before it starts them (the workers inherit it through the environment):
- rate limits: one set of token buckets in a shared file (services.query.shared_buckets), so a key's
  limit does not multiply by the number of processes;
- metrics: prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR); /metrics on any worker
  sums every worker's counters and histograms;
- pagination cursors: one signing secret (a random one per start when K2_QUERY_CURSOR_SECRET is
  empty), so a cursor made by one worker is accepted by the others.
Caches (responses, file plans) and DuckDB connections stay per process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from services.common.logs import setup_logging
from services.query.app import create_app
from services.query.settings import QuerySettings
from services.query.shared_buckets import SHARED_DIR_ENV


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn factory; settings from the inherited environment)."""
    settings = QuerySettings()
    setup_logging(settings.log_level, "query")
    return create_app(settings)


@contextlib.contextmanager
def shared_state(settings: QuerySettings) -> Iterator[Path]:
    """The parent's private directory for the shared buckets and metrics, exported to the workers."""
    shared = Path(tempfile.mkdtemp(prefix="k2-query-"))
    (shared / "metrics").mkdir()
    saved = {
        k: os.environ.get(k) for k in (SHARED_DIR_ENV, "PROMETHEUS_MULTIPROC_DIR", "K2_QUERY_CURSOR_SECRET")
    }
    os.environ[SHARED_DIR_ENV] = str(shared)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
    if not settings.query_cursor_secret:
        os.environ["K2_QUERY_CURSOR_SECRET"] = secrets.token_hex(32)
    try:
        yield shared
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(shared, ignore_errors=True)


def serve(settings: QuerySettings) -> None:
    """Run settings.query_processes workers until SIGTERM/SIGINT (uvicorn's supervisor stops them)."""
    with shared_state(settings):
        uvicorn.run(
            "services.query.workers:worker_app",
            factory=True,
            host=settings.query_host,
            port=settings.query_port,
            workers=settings.query_processes,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
