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
import ctypes
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from services.common.logs import setup_logging
from services.query.app import create_app
from services.query.settings import QuerySettings
from services.query.shared_buckets import SHARED_DIR_ENV

PARENT_ENV = "_K2_QUERY_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """A worker stops when its supervisor dies, even by SIGKILL (else orphans would keep the port)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ.get(PARENT_ENV, os.getppid())):  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn factory; settings from the inherited environment)."""
    if sys.platform == "linux":
        _die_with_parent()
    settings = QuerySettings()
    setup_logging(settings.log_level, "query")
    return create_app(settings)


@contextlib.contextmanager
def shared_state(settings: QuerySettings) -> Iterator[Path]:
    """The parent's private directory for the shared buckets and metrics, exported to the workers."""
    shared = Path(tempfile.mkdtemp(prefix="k2-query-"))
    (shared / "metrics").mkdir()
    names = (SHARED_DIR_ENV, PARENT_ENV, "PROMETHEUS_MULTIPROC_DIR", "K2_QUERY_CURSOR_SECRET")
    saved = {k: os.environ.get(k) for k in names}
    os.environ[SHARED_DIR_ENV] = str(shared)
    os.environ[PARENT_ENV] = str(os.getpid())
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
    # A configuration error (e.g. auth on without a key) fails here, once, with a non-zero exit; in the
    # workers it would only make uvicorn's supervisor restart them forever.
    create_app(settings)
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
