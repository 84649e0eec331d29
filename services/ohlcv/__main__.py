"""`python -m services.ohlcv`: run one OHLCV worker (run N of them to scale; SIGTERM = clean stop)."""

from __future__ import annotations

import asyncio

import uvloop

from services.common.gctuning import tune_for_latency
from services.common.logs import setup_logging
from services.common.metrics import UP, serve_metrics
from services.common.stream import run_until_signalled
from services.ohlcv.app import LivePublisher, create_app, report_gauges, tick_seconds
from services.ohlcv.settings import OhlcvSettings


async def main() -> None:
    settings = OhlcvSettings()
    setup_logging(settings.log_level, "ohlcv")
    tune_for_latency()
    serve_metrics("ohlcv", settings.metrics_port, settings.metrics_host)
    wake_live = asyncio.Event()
    app = create_app(settings, on_update=wake_live.set)
    live = LivePublisher(app, settings.kafka_bootstrap, f"{settings.ohlcv_app_id}-live", wake_live)
    UP.labels("ohlcv").set(1)
    tasks = [
        asyncio.ensure_future(live.run(tick_seconds(settings))),
        asyncio.ensure_future(report_gauges(app)),
    ]
    try:
        await run_until_signalled(app)
    finally:
        await live.publish()  # the last applied trades' updates
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    uvloop.run(main())
