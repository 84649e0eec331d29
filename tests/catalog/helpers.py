"""What the catalog tests share: the trades' time range, silver's exact contents, waiting for silver's
recorded offsets, and reading an API response in Arrow."""

from __future__ import annotations

import pyarrow as pa
from fastapi.testclient import TestClient
from pyarrow import ipc
from pyiceberg.catalog import Catalog

from services.common.schemas import Trade
from services.common.tables import NAMESPACE, SILVER_TRADES
from services.common.topics import TRADES
from services.lakewriter.offsets import table_offsets
from tests.kafka_helpers import end_offsets, wait_for
from tests.lakewriter.helpers import expected_tuple, rows, trade_tuple

RANGE = {"start": "2025-11-24T00:00:00Z", "end": "2025-11-27T00:00:00Z"}  # tests.lakewriter's trades


def assert_silver_exactly(catalog: Catalog, trades: list[Trade]) -> None:
    """Silver holds exactly `trades`: every row's exact values, and the quote total to the last digit."""
    silver = rows(catalog, SILVER_TRADES)
    assert sorted(trade_tuple(r) for r in silver) == sorted(expected_tuple(t) for t in trades)
    assert sum(r["quote_quantity"] for r in silver) == sum(t.quote_quantity for t in trades)


async def wait_offsets_recorded(catalog: Catalog, bootstrap: str) -> dict[tuple[str, int], int]:
    """Until silver's snapshot summary records the trades topic's end offsets; returns them."""
    ends = {(TRADES, p): o for p, o in (await end_offsets(bootstrap, TRADES)).items() if o}
    await wait_for(
        lambda: table_offsets(catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")) == ends,
        timeout=30,
        message="silver's snapshot summary to record the topic's end offsets",
    )
    return ends


def arrow_export(client: TestClient, path: str) -> pa.Table:
    """GET `path` over RANGE in Arrow IPC (the query service's exact export)."""
    response = client.get(path, params={**RANGE, "format": "arrow"})
    assert response.status_code == 200, response.text
    return ipc.open_stream(response.content).read_all() if response.content else pa.table({})
