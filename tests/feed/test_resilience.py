"""Reconnects: forced disconnect, stale connection, rotation; each resubscribes and writes a marker."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.common.raw import KIND_MARKER, DisconnectMarker, RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed import metrics
from services.feed.connector import Connector, ConnectorOptions
from services.feed.publisher import KafkaPublisher
from services.feed.simulator.server import Simulator
from tests.feed.conftest import control, sim_url
from tests.kafka_helpers import read_topic, wait_for

FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}


async def _run_until_reconnected(
    topics: str,
    sim: Simulator,
    exchange: str,
    natives: list[str],
    options: ConnectorOptions,
    fault: tuple[str, dict] | None,
):
    publisher = KafkaPublisher(topics)
    await publisher.start()
    connector = Connector(exchange, f"{exchange}-r", sim_url(sim, exchange), natives, publisher, options)
    task = asyncio.create_task(connector.run())
    try:
        await wait_for(
            lambda: connector.connections == 1 and connector._last_frame_ns > 0,
            message="the first connection and a frame",
        )
        first_id = connector.connection_id
        if fault is not None:
            answer = json.loads(await control(sim, fault[0], exchange=exchange, **fault[1]))
            assert answer["ok"] and answer["connections"] == 1
        await wait_for(
            lambda: (
                connector.connections >= 2
                and len(sim.history[exchange]) >= 2
                and sim.history[exchange][1].received == sim.history[exchange][0].received
                and len(sim.history[exchange][1].sent or []) >= 3
            ),
            message="a reconnect and a resubscription",
        )
        second_id = connector.connection_id
    finally:
        connector.stop()
        await asyncio.wait_for(task, 10)
    assert await publisher.flush(30)
    await publisher.stop()
    return first_id, second_id, await read_topic(topics, RAW_TOPICS[exchange])


async def test_forced_disconnect_reconnects_resubscribes_and_writes_a_marker(topics: str, sim: Simulator):
    natives = ["BTC/USD", "SOL/USD"]
    first, second, records = await _run_until_reconnected(
        topics, sim, "kraken", natives, ConnectorOptions(**FAST), ("disconnect", {"mode": "abort"})
    )
    assert first != second
    old = [r for r in records if r.key == first.encode()]
    new = [r for r in records if r.key == second.encode()]
    assert old and new
    marker_record = new[0]  # the marker comes first on the new connection's key
    headers = RawHeaders.from_kafka(marker_record.headers)
    assert headers.kind == KIND_MARKER and headers.seq == 0 and headers.connection_id == second
    marker = DisconnectMarker.decode(marker_record.value)
    last_old = RawHeaders.from_kafka(old[-1].headers)
    assert marker.exchange == "kraken"
    assert marker.connection_id == first and marker.new_connection_id == second
    assert marker.down_from_ns == last_old.received_at_ns
    assert marker.down_from_ns <= marker.down_to_ns == headers.received_at_ns
    assert marker.down_to_ns <= RawHeaders.from_kafka(new[1].headers).received_at_ns
    assert marker.symbols == tuple(natives)
    assert marker.reason.startswith("closed")
    # The new connection subscribed again, with the very same message.
    expected = '{"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "SOL/USD"]}}'
    assert [c.received for c in sim.history["kraken"][:2]] == [[expected], [expected]]
    assert [RawHeaders.from_kafka(r.headers).seq for r in new[1:]] == list(range(1, len(new)))


@pytest.mark.parametrize(
    ("reason", "options", "fault"),
    [
        ("stale", ConnectorOptions(stale_after_s=1.0, **FAST), ("stall", {"seconds": 4})),
        ("rotate", ConnectorOptions(rotate_after_s=1.0, **FAST), None),
    ],
)
async def test_stale_or_old_connections_are_replaced(
    topics: str, sim: Simulator, reason: str, options: ConnectorOptions, fault
) -> None:
    before = metrics.RECONNECTS.labels("coinbase", reason)._value.get()
    first, second, records = await _run_until_reconnected(
        topics, sim, "coinbase", ["BTC-USD"], options, fault
    )
    markers = [
        DisconnectMarker.decode(r.value)
        for r in records
        if r.key == second.encode() and RawHeaders.from_kafka(r.headers).kind == KIND_MARKER
    ]
    assert [(m.connection_id, m.reason) for m in markers] == [(first, reason)]
    assert metrics.RECONNECTS.labels("coinbase", reason)._value.get() >= before + 1
