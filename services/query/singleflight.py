"""One computation per key at a time: concurrent requests for the same uncached answer share it.

When the lake writer commits, every cached answer of the table gets a new key at once; without this,
N clients polling the same candles would all miss together and run N identical DuckDB queries
(a stampede exactly when the service is busiest). Event-loop only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
_RETRY = object()  # the leader was cancelled (its client went away): a waiter computes instead


class SingleFlight:
    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Future] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """compute()'s result; if the same key is already being computed, wait for that one instead."""
        while True:
            pending = self._pending.get(key)
            if pending is None:
                return await self._lead(key, compute)
            await asyncio.wait([pending])  # a waiter's own cancellation does not cancel the leader
            outcome: Any = pending.result()
            if outcome is _RETRY:
                continue
            ok, value = outcome
            if ok:
                return value
            raise value

    async def _lead(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await compute()
        except asyncio.CancelledError:
            future.set_result(_RETRY)
            raise
        except Exception as exc:
            future.set_result((False, exc))  # waiters fail the same way (e.g. 504 on a timeout)
            raise
        else:
            future.set_result((True, value))
            return value
        finally:
            del self._pending[key]

    def __len__(self) -> int:
        return len(self._pending)
