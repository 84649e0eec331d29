"""`kill -USR1` on a service logs where each of its tasks waits, down to the innermost coroutine."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from services.common.logs import await_chains, dump_tasks_on_sigusr1


async def innermost(ready: asyncio.Event, release: asyncio.Event) -> None:
    ready.set()
    await release.wait()


async def outer(ready: asyncio.Event, release: asyncio.Event) -> None:
    await innermost(ready, release)


async def test_the_dump_names_every_coroutine_a_task_waits_in(caplog: pytest.LogCaptureFixture) -> None:
    ready, release = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(outer(ready, release), loop=None)
    task.set_name("waiting-task")
    await ready.wait()
    loop = asyncio.get_running_loop()
    chain = await_chains(loop)
    section = chain.split("--- waiting-task\n", 1)[1].split("---", 1)[0]
    assert [line.split()[-1] for line in section.splitlines()][:2] == ["outer", "innermost"]

    dump_tasks_on_sigusr1(loop)
    try:
        with caplog.at_level(logging.WARNING, logger="k2.tasks"):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):  # the handler runs on a later turn of the loop
                if "waiting-task" in caplog.text:
                    break
                await asyncio.sleep(0.01)
        assert "innermost" in caplog.text
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        release.set()
        await task
