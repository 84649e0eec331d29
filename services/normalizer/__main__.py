"""`python -m services.normalizer`: one normalizer worker (run N of them to scale)."""

from __future__ import annotations

import asyncio

import uvloop

from services.common.gctuning import tune_for_latency
from services.common.logs import setup_logging
from services.common.metrics import UP, serve_metrics
from services.common.stream import run_until_signalled
from services.normalizer.app import create_app, report_lag
from services.normalizer.settings import NormalizerSettings


async def main() -> None:
    settings = NormalizerSettings()
    setup_logging(settings.log_level, "normalizer")
    tune_for_latency()
    serve_metrics("normalizer", settings.metrics_port, settings.metrics_host)
    app = create_app(settings)
    UP.labels("normalizer").set(1)
    lag = asyncio.ensure_future(report_lag(app))
    try:
        await run_until_signalled(app)
    finally:
        lag.cancel()


if __name__ == "__main__":
    uvloop.run(main())
