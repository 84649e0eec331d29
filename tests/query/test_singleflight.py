"""Concurrent misses of one key share one computation; errors reach every waiter; a cancelled leader
hands over to a waiter."""

from __future__ import annotations

import asyncio

import pytest

from services.query.singleflight import SingleFlight
from tests.kafka_helpers import wait_for


async def test_concurrent_requests_share_one_computation():
    flights, gate, calls = SingleFlight(), asyncio.Event(), []

    async def compute() -> int:
        calls.append(1)
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flights.run("k", compute)) for _ in range(5)]
    await wait_for(lambda: len(calls) == 1 and len(flights) == 1, timeout=5)
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 5
    assert len(calls) == 1 and len(flights) == 0
    assert await flights.run("other", compute) == 42 and len(calls) == 2  # a new key computes again


async def test_an_error_reaches_every_waiter():
    flights, gate = SingleFlight(), asyncio.Event()

    async def failing() -> int:
        await gate.wait()
        raise TimeoutError("query exceeded")

    tasks = [asyncio.create_task(flights.run("k", failing)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results) and len(flights) == 0


async def test_a_cancelled_leader_hands_over_to_a_waiter():
    flights, calls = SingleFlight(), []
    release = asyncio.Event()

    async def compute() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(3600)  # the first leader never finishes: its client goes away
        await release.wait()
        return "done"

    leader = asyncio.create_task(flights.run("k", compute))
    await wait_for(lambda: len(calls) == 1, timeout=5)
    waiter = asyncio.create_task(flights.run("k", compute))
    await asyncio.sleep(0.01)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await wait_for(lambda: len(calls) == 2, timeout=5)
    release.set()
    assert await waiter == "done"
