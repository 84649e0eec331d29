"""`python -m services.normalizer`: one normalizer worker (run N of them to scale)."""

from __future__ import annotations

import faust

from services.common.logs import setup_logging
from services.common.metrics import UP, serve_metrics
from services.normalizer.app import Normalizer
from services.normalizer.settings import NormalizerSettings


def main() -> None:
    settings = NormalizerSettings()
    setup_logging(settings.log_level, "normalizer")
    normalizer = Normalizer(settings)
    serve_metrics("normalizer", settings.metrics_port, settings.metrics_host)
    UP.labels("normalizer").set(1)
    worker = faust.Worker(
        normalizer.app, loglevel=settings.log_level, redirect_stdouts=False, override_logging=False
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
