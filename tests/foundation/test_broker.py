"""The local broker: starts from the cache, answers metadata, restarts on the same data, stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.kafka.broker import LIBS_DIR, LocalBroker, fetch_jars
from services.common.metrics import free_port
from tests.kafka_helpers import produce, read_topic


def test_jars_come_from_the_cache() -> None:
    libs = fetch_jars()
    assert libs == LIBS_DIR
    assert any(p.name.startswith("kafka_2.13-4.") for p in libs.glob("*.jar"))


async def test_second_start_reuses_data_and_stop_is_clean(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path, port=free_port(), controller_port=free_port())
    try:
        broker.start()
        meta = (broker.log_dir / "meta.properties").read_text()
        from services.common.kafka import ensure_topics
        from services.common.topics import TopicSpec

        await ensure_topics(broker.bootstrap, [TopicSpec("k2.restart", 1, key="-", value="-")])
        await produce(broker.bootstrap, "k2.restart", [(b"k", b"before-restart", None)])
        assert broker.stop() is True
        assert broker.pid() is None
        broker.start()  # same data dir: no reformat, the record is still there
        assert (broker.log_dir / "meta.properties").read_text() == meta
        records = await read_topic(broker.bootstrap, "k2.restart")
        assert [r.value for r in records] == [b"before-restart"]
        pid = broker.pid()
        broker.start()  # already running: only waits
        assert broker.pid() == pid
    finally:
        broker.stop()
    assert broker.stop() is False


def test_broker_exiting_during_start_is_a_clear_error(tmp_path: Path, broker: LocalBroker) -> None:
    from deploy.kafka.broker import BrokerError

    clash = LocalBroker(tmp_path, port=broker.port, controller_port=free_port())  # port already taken
    with pytest.raises(BrokerError, match=f"port {broker.port} is in use"):
        clash.start(timeout=60)
    assert clash.pid() is None
