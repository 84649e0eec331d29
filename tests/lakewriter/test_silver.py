"""Silver equals the trades produced: count and content, exact decimals; aborted transactions stay out;
records that are not valid trades are rejected and counted, the good ones around them all land."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from services.common.catalog import open_catalog
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES
from services.common.topics import TRADES
from services.lakewriter.offsets import table_offsets
from tests.kafka_helpers import committed_offsets, end_offsets, produce, wait_for
from tests.lakewriter.helpers import (
    count,
    expected_tuple,
    make_trades,
    rows,
    trade_records,
    trade_tuple,
    writer_process,
)
from tests.processes import scrape


def bad_records(key: bytes, good: bytes) -> list[tuple[bytes, bytes, None]]:
    """Records on the trades topic that must not reach silver (same key: the same partition as good ones)."""

    def edited(**changes: object) -> bytes:
        data = orjson.loads(good)
        data.update(changes)
        data["trade_id"] = "bad-" + "-".join(changes)
        return orjson.dumps(data)

    values = [
        b"not json",
        edited(price="1.0000000000000000001"),  # 19 fractional digits: never rounded, rejected
        edited(price=1.5),  # a JSON number: money never goes through float
        edited(exchange_ts="yesterday"),
    ]
    return [(key, value, None) for value in values]


def rejected_total(text: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("k2_lakewriter_rejected_total{")
    )


async def test_silver_equals_trades_produced(fresh_topics: str, k2_env: dict[str, str]) -> None:
    trades = make_trades(3000, seed=7)
    await produce(fresh_topics, TRADES, trade_records(trades[:1000]))
    bad = bad_records(trades[0].key.encode(), trades[0].encode())
    await produce(fresh_topics, TRADES, bad)
    await produce(fresh_topics, TRADES, trade_records(trades[1000:2000]))
    # An aborted transaction in the middle: read_committed must never let it into silver.
    producer = AIOKafkaProducer(bootstrap_servers=fresh_topics, transactional_id="lw-test-abort")
    await producer.start()
    try:
        async with producer.transaction():
            pass
        await producer.begin_transaction()
        for t in make_trades(50, seed=99, start_id=900_000):
            await producer.send(TRADES, t.encode(), key=t.key.encode())
        await producer.abort_transaction()
    finally:
        await producer.stop()
    await produce(fresh_topics, TRADES, trade_records(trades[2000:]))

    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    with writer_process(k2_env, TOPICS="trades", BATCH_ROWS="700") as proc:
        proc.wait_http(proc.metrics_url)
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(trades),
            timeout=90,
            message=f"silver to hold {len(trades)} rows",
        )
        assert rejected_total(scrape(proc.metrics_url)) == len(bad)
    got = [trade_tuple(r) for r in rows(catalog, SILVER_TRADES)]
    assert len(got) == len(trades)
    assert sorted(got) == sorted(expected_tuple(t) for t in trades)
    assert len({(r[0], r[1], r[3]) for r in got}) == len(trades)
    # The table records, per partition, exactly the end of the topic: resume point for a restart.
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    ends = await end_offsets(fresh_topics, TRADES)
    recorded = table_offsets(table)
    assert {p: o for (topic, p), o in recorded.items() if topic == TRADES} == {
        p: e for p, e in ends.items() if e > 0
    } or all(recorded.get((TRADES, p), 0) >= e - 1 for p, e in ends.items() if e > 0)
    assert len(table.metadata.snapshots) >= 2  # batching by rows: several commits


async def test_group_offsets_reach_the_end_past_transaction_markers(
    fresh_topics: str, k2_env: dict[str, str]
) -> None:
    """A transactional topic ends with a commit marker no record carries: once everything is in the
    tables the writer's group must still reach the end (lag 0), or every lag alert fires forever."""
    trades = make_trades(40, seed=3)
    producer = AIOKafkaProducer(bootstrap_servers=fresh_topics, transactional_id="lw-test-tail")
    await producer.start()
    try:
        async with producer.transaction():
            for t in trades:
                await producer.send(TRADES, t.encode(), key=t.key.encode())
    finally:
        await producer.stop()
    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    group = "k2-lakewriter-tail-test"

    async def caught_up() -> bool:
        # read the ends each time: the commit markers are written after commit_transaction returns
        ends = {p: e for p, e in (await end_offsets(fresh_topics, TRADES)).items() if e > 0}
        done = await committed_offsets(fresh_topics, group)
        return bool(ends) and all(done.get((TRADES, p), -1) == e for p, e in ends.items())

    with writer_process(k2_env, TOPICS="trades", GROUP_ID=group) as proc:
        proc.wait_http(proc.metrics_url)
        await wait_for(lambda: count(catalog, SILVER_TRADES) >= len(trades), timeout=90, message="silver")
        await wait_for(caught_up, timeout=60, message="the group's offsets to pass the commit markers")
    assert count(catalog, SILVER_TRADES) == len(trades)
