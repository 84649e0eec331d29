"""Feed test fixtures: an in-process exchange simulator (a real WebSocket server on a free port)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.instruments import default_instruments
from services.feed.simulator.server import Simulator

DEMO_CAPTURE = Path(__file__).resolve().parents[2] / "services" / "feed" / "captures" / "demo.jsonl.gz"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(default_instruments(), seed=11, rate=100.0, keep_sent=True)
    await simulator.start("127.0.0.1", 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


def sim_url(simulator: Simulator, exchange: str) -> str:
    path = {"binance": "/binance/stream", "kraken": "/kraken/v2", "coinbase": "/coinbase"}[exchange]
    return f"ws://127.0.0.1:{simulator.port}{path}"


async def control(simulator: Simulator, command: str, **params: object) -> str:
    """POST /control/<command>?... over real HTTP (the way an operator or the demo does it)."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    url = f"http://127.0.0.1:{simulator.port}/control/{command}" + (f"?{query}" if query else "")

    def post() -> str:
        request = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    return await asyncio.to_thread(post)
