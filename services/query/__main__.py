"""`python -m services.query`: the query API under uvicorn (SIGTERM stops it cleanly)."""

from __future__ import annotations

import uvicorn

from services.common.logs import setup_logging
from services.query.app import create_app
from services.query.settings import QuerySettings


def main() -> None:
    settings = QuerySettings()
    setup_logging(settings.log_level, "query")
    uvicorn.run(create_app(settings), host=settings.query_host, port=settings.query_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
