"""One snapshot per response: pagination across a commit, concurrent commits, visible duplicate revisions."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from bench.query_data import DAY0_US, make_trades
from services.common.catalog import open_catalog
from services.common.tables import NAMESPACE, gold_table
from services.lakewriter.convert import candle_row, to_arrow
from services.lakewriter.writer import append_trades
from services.query.app import create_app
from services.query.settings import QuerySettings
from tests.kafka_helpers import wait_for
from tests.query.conftest import build_lake, settings_for
from tests.query.expected import candle_json, trade_json, trade_sort_key

START, END = "2024-03-01T00:00:00Z", "2024-03-04T00:00:00Z"


@pytest.fixture(scope="module")
def mutable(tmp_path_factory):
    lake = build_lake(tmp_path_factory.mktemp("mutable-lake"), per_market=60)
    catalog = open_catalog(QuerySettings(data_dir=lake.data_dir))
    with TestClient(create_app(settings_for(lake.data_dir, query_refresh_s=0.05))) as test_client:
        yield lake, catalog, test_client


def _snapshot(client, table: str) -> int:
    return client.get(f"/v1/snapshots/{table}").json()["data"][-1]["snapshot_id"]


async def test_pagination_stays_on_its_snapshot_while_the_writer_commits(mutable):
    lake, catalog, client = mutable
    first = client.get("/v1/trades", params={"start": START, "end": END, "limit": 50}).json()
    pinned = first["snapshot_id"]
    extra = make_trades(20, start_us=DAY0_US + 3600_000_000, span_us=3600_000_000, seed=3, id_base=9_000_000)
    new_snapshot = append_trades(catalog, extra).snapshot_id
    await wait_for(lambda: _snapshot(client, "silver_trades") == new_snapshot, timeout=30)
    rows, cursor = list(first["data"]), first["next_cursor"]
    while cursor:
        params = {"start": START, "end": END, "limit": 50, "cursor": cursor}
        page = client.get("/v1/trades", params=params).json()
        assert page["snapshot_id"] == pinned
        rows += page["data"]
        cursor = page["next_cursor"]
    assert rows == [trade_json(t) for t in sorted(lake.trades, key=trade_sort_key)]
    fresh = client.get("/v1/trades", params={"start": START, "end": END, "limit": 10_000}).json()
    assert fresh["snapshot_id"] == new_snapshot
    assert fresh["count"] == len(lake.trades) + len(extra)
    lake.batch2 += extra


def test_responsive_while_the_lake_writer_commits(mutable):
    _, catalog, client = mutable
    stop = threading.Event()
    commits: list[int] = []

    def writer() -> None:
        base = 20_000_000
        while not stop.is_set() and len(commits) < 15:
            batch = make_trades(
                5, start_us=DAY0_US + 7200_000_000, span_us=600_000_000, seed=base, id_base=base
            )
            commits.append(append_trades(catalog, batch).snapshot_id)
            base += 10

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        while thread.is_alive():
            response = client.get("/v1/trades", params={"start": START, "end": END, "limit": 10_000})
            assert response.status_code == 200
            body = response.json()
            seen.add(body["snapshot_id"])
            assert body["count"] == len({(r["exchange"], r["symbol"], r["trade_id"]) for r in body["data"]})
            candles = client.get("/v1/ohlcv/1h", params={"start": START, "end": END})
            assert candles.status_code == 200
    finally:
        stop.set()
        thread.join()
    assert len(commits) == 15 and len(seen) >= 2


async def test_duplicate_visible_revisions_serve_the_highest(mutable):
    lake, catalog, client = mutable
    candle = next(c for c in lake.candles_now["1h"] if c.symbol == "ETH/USDT")
    newer = replace(candle, close=candle.close + 5, revision=candle.revision + 3)
    older = replace(candle, close=candle.close - 5, revision=0)
    table = catalog.load_table(f"{NAMESPACE}.{gold_table('1h')}")
    # Bypass the writer's upsert so that three revisions of one key are visible at once.
    table.append(to_arrow([candle_row(newer), candle_row(older)], table.schema()))
    snapshot = catalog.load_table(f"{NAMESPACE}.{gold_table('1h')}").current_snapshot().snapshot_id

    def served() -> list[dict] | None:
        body = client.get(
            "/v1/ohlcv/1h",
            params={"symbol": "ETH/USDT", "exchange": candle.exchange, "start": START, "end": END},
        ).json()
        return body["data"] if body["snapshot_id"] == snapshot else None

    rows = None

    def ready() -> bool:
        nonlocal rows
        rows = served()
        return rows is not None

    await wait_for(ready, timeout=30)
    assert rows is not None
    same = [r for r in rows if r["window_start"] == candle_json(candle)["window_start"]]
    assert same == [candle_json(newer)]
