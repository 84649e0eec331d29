"""`python -m services.query`: the query API under uvicorn (K2_QUERY_PROCESSES worker processes);
SIGTERM/SIGINT stop it cleanly (exit 0)."""

from __future__ import annotations

import contextlib
import logging
import signal

import uvicorn

from services.common.logs import setup_logging
from services.query import workers
from services.query.app import create_app
from services.query.settings import QuerySettings

log = logging.getLogger("services.query")


def main() -> None:
    settings = QuerySettings()
    setup_logging(settings.log_level, "query")
    if settings.query_processes > 1:
        log.info(
            "query API on http://%s:%d (%d worker processes)",
            settings.query_host,
            settings.query_port,
            settings.query_processes,
        )
        workers.serve(settings)  # returns after SIGTERM/SIGINT once the workers have stopped
        return
    config = uvicorn.Config(
        create_app(settings),
        host=settings.query_host,
        port=settings.query_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        server.should_exit = True

    # uvicorn re-raises the signal after its graceful shutdown (exit status -15); handle it ourselves so
    # a clean stop exits 0.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("query API on http://%s:%d", settings.query_host, settings.query_port)
    server.run()


if __name__ == "__main__":
    main()
