"""The simulator and the feed as real processes (as `task demo` runs them): metrics, control, stop."""

from __future__ import annotations

import asyncio
import re
import urllib.request

from services.common.metrics import free_port
from tests.kafka_helpers import wait_for
from tests.processes import ServiceProcess, scrape


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_simulator_and_feed_processes_with_metrics_control_and_clean_stop(
    topics: str, k2_env: dict[str, str]
) -> None:
    sim_port, sim_metrics, feed_metrics = free_port(), free_port(), free_port()
    sim_env = {**k2_env, "K2_FEED_SIMULATOR_METRICS_PORT": str(sim_metrics), "K2_FEED_SIMULATOR_RATE": "50"}
    feed_env = {
        **k2_env,
        "K2_METRICS_PORT": str(feed_metrics),
        "K2_FEED_SOURCE": "simulator",
        "K2_FEED_SIMULATOR_URL": f"ws://127.0.0.1:{sim_port}",
        "K2_FEED_BACKOFF_INITIAL_S": "0.1",
        "K2_FEED_SYMBOLS": "binance:BTCUSDT,kraken:BTC/USD,coinbase:BTC-USD,coinbase:ETH-USD",
    }
    simulator = ServiceProcess(
        "services.feed.simulator", ["--port", str(sim_port)], env=sim_env, name="simulator"
    )
    feed = ServiceProcess("services.feed", env=feed_env, name="feed")
    with simulator, feed:
        await asyncio.to_thread(simulator.wait_http, f"http://127.0.0.1:{sim_port}/metrics")
        await asyncio.to_thread(feed.wait_http, f"http://127.0.0.1:{feed_metrics}/metrics")
        feed_url = f"http://127.0.0.1:{feed_metrics}/metrics"

        async def frames_from_all() -> bool:
            text = await asyncio.to_thread(scrape, feed_url)
            return all(
                _sample(text, "k2_feed_records_produced_total", topic=f"market.crypto.trades.{ex}.raw") > 3
                for ex in ("binance", "kraken", "coinbase")
            )

        await wait_for(frames_from_all, timeout=60, message="records from every exchange acknowledged")
        request = urllib.request.Request(
            f"http://127.0.0.1:{sim_port}/control/disconnect?exchange=kraken", method="POST"
        )
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=5).read())

        async def reconnected() -> bool:
            text = await asyncio.to_thread(scrape, feed_url)
            return _sample(text, "k2_feed_disconnect_markers_total", exchange="kraken") >= 1

        await wait_for(reconnected, timeout=60, message="a kraken reconnect with its marker")
        text = await asyncio.to_thread(scrape, feed_url)
        for name in (
            "k2_feed_frames_total",
            "k2_feed_bytes_total",
            "k2_feed_trades_total",
            "k2_feed_connection_state",
            "k2_feed_reconnects_total",
            "k2_feed_last_frame_age_seconds",
            "k2_feed_produce_latency_seconds_bucket",
            "k2_feed_buffer_frames",
        ):
            assert re.search(rf"^{name}[{{ ]", text, re.M), name
        assert _sample(text, "k2_feed_connection_state", slot="kraken-0", state="subscribed") == 1
        sim_text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{sim_metrics}/metrics")
        assert _sample(sim_text, "k2_simulator_faults_total", fault="disconnect", exchange="kraken") == 1
        assert feed.stop() == 0 and simulator.stop() == 0  # SIGTERM is a clean stop
