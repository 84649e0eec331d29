"""One logging setup for every process: timestamped lines on stderr (the supervisor files them)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from typing import Any


def setup_logging(level: str = "INFO", service: str = "k2") -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # aiokafka is chatty at INFO about every rebalance step (K2_LOG_KAFKA=1 keeps it).
    if os.environ.get("K2_LOG_KAFKA") == "1":
        return
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def await_chains(loop: asyncio.AbstractEventLoop) -> str:
    """Every task of `loop` and the whole chain of coroutines it is waiting in (task.print_stack
    shows only the outermost frame of a suspended task)."""
    out = io.StringIO()
    for task in asyncio.all_tasks(loop):
        print(f"--- {task.get_name()}", file=out)
        awaitable: Any = task.get_coro()
        while awaitable is not None:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
            if frame is None:
                print(f"    {awaitable!r}", file=out)
                break
            print(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=out)
            awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return out.getvalue()


def dump_tasks_on_sigusr1(loop: asyncio.AbstractEventLoop) -> None:
    """`kill -USR1 <pid>` logs where every task of a quiet service is waiting."""
    log = logging.getLogger("k2.tasks")
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("asyncio tasks:\n%s", await_chains(loop)))
