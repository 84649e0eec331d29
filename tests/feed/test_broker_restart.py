"""Kafka dies (kill -9) mid-stream and comes back: every received frame still ends up on the raw topic."""

from __future__ import annotations

import asyncio

from deploy.kafka.broker import LocalBroker
from services.common.raw import RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed.connector import Connector, ConnectorOptions
from services.feed.publisher import KafkaPublisher
from services.feed.simulator.server import Simulator
from tests.feed.conftest import sim_url
from tests.kafka_helpers import read_topic, wait_for


async def test_a_broker_crash_and_restart_mid_stream_loses_no_frame(
    sim: Simulator, broker: LocalBroker, topics: str
) -> None:
    """Uses the session broker (a second JVM costs a minute on a busy 2-core machine): it is killed and
    restarted on the same ports and data, so the tests after this one find it as before."""
    publisher = None
    try:
        topic = RAW_TOPICS["binance"]
        publisher = KafkaPublisher(broker.bootstrap, produce_timeout_ms=60_000)
        await publisher.start()
        connector = Connector(
            "binance",
            "binance-restart",
            sim_url(sim, "binance"),
            ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
            publisher,
            ConnectorOptions(stale_after_s=120),
        )
        task = asyncio.create_task(connector.run())
        try:
            await wait_for(lambda: publisher.acked >= 30, timeout=60, message="frames flowing into Kafka")
            await asyncio.to_thread(broker.kill)  # a crash, not a clean shutdown
            received_at_stop = len(sim.history["binance"][0].sent or [])
            await wait_for(
                lambda: len(sim.history["binance"][0].sent or []) >= received_at_stop + 100,
                timeout=60,
                message="100 more frames while the broker is down",
            )
            assert publisher.depth > 0  # buffered, not dropped
            await asyncio.to_thread(broker.start, True)
            await wait_for(
                lambda: publisher.acked >= received_at_stop + 100,
                timeout=90,
                message="the buffered frames acknowledged after the restart",
            )
        finally:
            connector.stop()
            await asyncio.wait_for(task, 10)
        assert await publisher.flush(60)
        received = connector._frames._value.get()
        records = [
            r
            for r in await read_topic(broker.bootstrap, topic, timeout=30)
            if r.key == connector.connection_id.encode()
        ]
        by_seq = {RawHeaders.from_kafka(r.headers).seq: r.value for r in records}
        assert sorted(by_seq) == list(range(1, int(received) + 1))  # no hole, not one frame lost
        sent = sim.history["binance"][0].sent or []
        assert [by_seq[seq] for seq in sorted(by_seq)] == [text.encode() for text in sent[: len(by_seq)]]
    finally:
        if publisher is not None:
            await publisher.stop(timeout=5)
        if broker.pid() is None:
            await asyncio.to_thread(broker.start, True)
