"""Two writer replicas in one group share the partitions and give exactly the input; one leaving is fine."""

from __future__ import annotations

from services.common.catalog import open_catalog
from services.common.schemas import Trade
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES
from services.common.topics import TRADES
from tests.kafka_helpers import produce, read_topic, wait_for
from tests.lakewriter.helpers import (
    count,
    expected_tuple,
    make_trades,
    rows,
    trade_records,
    trade_tuple,
    writer_process,
)
from tests.processes import ServiceProcess, scrape


def assigned(proc: ServiceProcess) -> float:
    """The replica's k2_lakewriter_assigned_partitions (0 until it has joined)."""
    for line in scrape(proc.metrics_url).splitlines():  # type: ignore[attr-defined]
        if line.startswith("k2_lakewriter_assigned_partitions "):
            return float(line.split()[1])
    return 0.0


async def test_two_replicas_give_the_same_result(topics: str, k2_env: dict[str, str]) -> None:
    await produce(topics, TRADES, trade_records(make_trades(1500, seed=21, start_id=3_000_000)))
    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    settings = {"TOPICS": "trades", "GROUP_ID": "lw-replicas", "BATCH_ROWS": "200"}
    a = writer_process(k2_env, name="replica-a", **settings).start()
    b = writer_process(k2_env, name="replica-b", **settings).start()
    try:
        a.wait_http(a.metrics_url, timeout=120)
        b.wait_http(b.metrics_url, timeout=120)
        # the first to join may drain the backlog alone: new input once both own partitions
        await wait_for(
            lambda: assigned(a) > 0 and assigned(b) > 0, timeout=60, message="both replicas to own partitions"
        )
        # Input keeps coming while both run.
        await produce(topics, TRADES, trade_records(make_trades(600, seed=22, start_id=3_100_000)))
        expected = [Trade.decode(r.value) for r in await read_topic(topics, TRADES)]
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(expected),
            timeout=120,
            message="both replicas to write everything",
        )
        a.stop()  # its partitions move to b, which resumes them from the table's offsets
        await produce(topics, TRADES, trade_records(make_trades(400, seed=23, start_id=3_200_000)))
        expected = [Trade.decode(r.value) for r in await read_topic(topics, TRADES)]
        await wait_for(
            lambda: count(catalog, SILVER_TRADES) >= len(expected),
            timeout=120,
            message="the remaining replica to take over",
        )
    finally:
        a.stop()
        b.stop()
    got = [trade_tuple(r) for r in rows(catalog, SILVER_TRADES)]
    keys = [(g[0], g[1], g[3]) for g in got]
    assert len(keys) == len(set(keys))
    assert sorted(got) == sorted(expected_tuple(t) for t in expected)
    snapshots = catalog.load_table(f"market.{SILVER_TRADES}").metadata.snapshots
    writers = {s.summary["k2.writer"] for s in snapshots}
    assert len(writers) >= 2  # both replicas committed to the same table
