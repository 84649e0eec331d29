"""`python -m services.ohlcv`: run one OHLCV worker (SIGTERM = clean stop)."""

from __future__ import annotations

import logging

from faust.worker import Worker

from services.common.logs import setup_logging
from services.common.metrics import UP, serve_metrics
from services.ohlcv.app import create_app
from services.ohlcv.settings import OhlcvSettings


def main() -> None:
    settings = OhlcvSettings()
    setup_logging(settings.log_level, "ohlcv")
    serve_metrics("ohlcv", settings.metrics_port, settings.metrics_host)
    app, _runtime = create_app(settings)
    UP.labels("ohlcv").set(1)
    worker = Worker(app, loglevel=settings.log_level.lower(), override_logging=False)
    logging.getLogger("faust").setLevel(max(logging.WARNING, logging.getLogger().level))
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
