"""kill -9 at random points of the commit path, >= 20 times: silver ends exactly equal to the input."""

from __future__ import annotations

import random
import time

import pytest

from services.common.catalog import open_catalog
from services.common.schemas import Trade
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES
from services.common.topics import TRADES
from services.lakewriter.faults import POINTS
from tests.kafka_helpers import produce, read_topic, wait_for
from tests.lakewriter.helpers import (
    assigned_partitions,
    count,
    expected_tuple,
    make_trades,
    rows,
    trade_records,
    trade_tuple,
    writer_process,
)


@pytest.mark.timeout(900)  # ~1.5 min on an idle 2-core machine; 20 process starts under load take longer
async def test_kill_minus_9_loop_leaves_silver_exact(topics: str, k2_env: dict[str, str]) -> None:
    """Even rounds: the writer SIGKILLs itself at a named point of the commit path (each point in turn);
    odd rounds: kill -9 from outside at a random moment after it got its partitions."""
    rng = random.Random(42)
    await produce(topics, TRADES, trade_records(make_trades(2000, seed=11, start_id=1_000_000)))
    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    hit: list[str] = []
    next_id = 2_000_000
    for kill in range(20):
        point = POINTS[(kill // 2) % len(POINTS)] if kill % 2 == 0 else ""
        proc = writer_process(
            k2_env,
            name=f"crash{kill}",
            TOPICS="trades",
            BATCH_ROWS="150",
            BATCH_SECONDS="0.2",
            INSTANCE_ID="crash-test",
            GROUP_ID="lw-crash",
            FAULT=f"{point}:1" if point else "",
        )
        proc.start()
        try:
            # New input keeps arriving while the writer lives and dies.
            await produce(topics, TRADES, trade_records(make_trades(100, seed=next_id, start_id=next_id)))
            next_id += 100
            if point:
                await wait_for(lambda p=proc: not p.running, timeout=180, message=f"a crash at {point}")
                assert proc.proc is not None and proc.proc.returncode == -9, proc.output()[-3000:]
                assert f"FAULT: crashing at {point}" in proc.output()
                hit.append(point)
                continue
            proc.wait_http(proc.metrics_url, timeout=120)
            await wait_for(
                lambda p=proc: assigned_partitions(p) > 0,
                timeout=120,
                message="the writer to get its partitions",
            )
            deadline = time.monotonic() + rng.uniform(0.2, 2.0)
            await wait_for(
                lambda d=deadline: time.monotonic() > d, timeout=10, interval=0.05, message="the kill time"
            )
            assert proc.running, proc.output()[-3000:]
        finally:
            proc.kill()  # external kill -9 (a no-op when it already crashed)
    assert set(hit) == set(POINTS)

    expected = [Trade.decode(r.value) for r in await read_topic(topics, TRADES)]
    with writer_process(
        k2_env, name="final", TOPICS="trades", INSTANCE_ID="crash-test", GROUP_ID="lw-crash"
    ) as proc:
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(expected),
            timeout=90,
            message=f"silver to reach {len(expected)} rows",
        )
    got = [trade_tuple(r) for r in rows(catalog, SILVER_TRADES)]
    keys = [(g[0], g[1], g[3]) for g in got]
    assert len(keys) == len(set(keys)), "duplicate natural keys in silver"
    assert sorted(got) == sorted(expected_tuple(t) for t in expected)
