"""Records aiokafka hands over while the writer is still taking partitions over are not lost.

aiokafka sets the new assignment before it calls the rebalance listener, so `getmany` can return
records of a partition the writer has sought to its table offset but not yet counted as its own.
Before the fix such records were dropped while the consumer's position moved past them: the next
commit recorded an offset beyond rows never written (seen in CI as a replica short of rows).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from services.common.catalog import open_catalog
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES
from services.common.topics import TRADES
from services.lakewriter.service import LakewriterService
from services.lakewriter.settings import LakewriterSettings
from tests.kafka_helpers import produce, wait_for
from tests.lakewriter.helpers import count, expected_tuple, make_trades, rows, trade_records, trade_tuple

SLOW_RESET_SECONDS = 1.5  # a loaded host: the offset reset of the empty partitions takes a while


def writer(k2_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> LakewriterService:
    for key, value in k2_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("K2_LAKEWRITER_TOPICS", "trades")
    monkeypatch.setenv("K2_LAKEWRITER_GROUP_ID", "lw-assignment")
    monkeypatch.setenv("K2_LAKEWRITER_BATCH_SECONDS", "0.2")
    monkeypatch.setenv("K2_LAKEWRITER_MAINTAIN_INTERVAL_SECONDS", "0")
    return LakewriterService(LakewriterSettings())


async def run_until(service: LakewriterService, catalog: object, rows_wanted: int) -> None:
    task = asyncio.ensure_future(service.run())
    try:
        await wait_for(
            lambda: task.done() or count(catalog, SILVER_TRADES) >= rows_wanted,  # type: ignore[arg-type]
            timeout=90,
            message=f"silver to reach {rows_wanted} rows",
        )
    finally:
        service.stop()
        await task


async def test_records_handed_over_during_the_takeover_are_written(
    fresh_topics: str, k2_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trades = make_trades(900, seed=31, start_id=5_000_000)
    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    await produce(fresh_topics, TRADES, trade_records(trades[:300]))
    # A first run leaves table offsets for the partitions holding trades; the others stay empty.
    await run_until(writer(k2_env, monkeypatch), catalog, 300)

    await produce(fresh_topics, TRADES, trade_records(trades[300:]))
    # On the next assignment the writer seeks the partitions with offsets, then awaits the reset of
    # the empty ones: slowed down, so getmany surely runs in between.
    reset = AIOKafkaConsumer.seek_to_beginning

    async def slow_reset(self: AIOKafkaConsumer, *partitions: object) -> bool:
        await asyncio.sleep(SLOW_RESET_SECONDS)
        return await reset(self, *partitions)

    monkeypatch.setattr(AIOKafkaConsumer, "seek_to_beginning", slow_reset)
    await run_until(writer(k2_env, monkeypatch), catalog, len(trades))

    got = [trade_tuple(r) for r in rows(catalog, SILVER_TRADES)]
    assert sorted(got) == sorted(expected_tuple(t) for t in trades)
