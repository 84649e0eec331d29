"""The local broker: starts from the cache, answers metadata, restarts on the same data, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kafka.broker import LIBS_DIR, LocalBroker, _alive, fetch_jars
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


STARTER = """
import sys, time
from pathlib import Path
from deploy.kafka.broker import LocalBroker
data, port, controller = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
broker = LocalBroker(data, port=port, controller_port=controller, exit_with_parent=True)
broker.start()
print(broker.pid(), flush=True)
time.sleep(600)
"""


def test_a_broker_started_with_exit_with_parent_stops_when_its_starter_is_killed(tmp_path: Path) -> None:
    """A killed test session or benchmark must not leave its broker running, holding memory and ports."""
    repo = Path(__file__).resolve().parents[2]
    args = [str(tmp_path), str(free_port()), str(free_port())]
    with open(tmp_path / "starter.err", "w+") as err:
        starter = subprocess.Popen(
            [sys.executable, "-c", STARTER, *args], cwd=repo, stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            assert starter.stdout is not None
            line = starter.stdout.readline()  # the broker's pid, once it answers
            err.seek(0)
            assert line.strip().isdigit(), f"the starter failed: {err.read()}"
            pid = int(line)
            assert _alive(pid)
        finally:
            starter.kill()  # kill -9: no cleanup of its own runs
            starter.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    outlived = _alive(pid)
    if outlived:  # a failing run must not leave the broker behind either
        os.kill(pid, signal.SIGKILL)
    assert not outlived, "the broker outlived the process that started it"
