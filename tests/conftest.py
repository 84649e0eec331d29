"""Session fixtures: one throwaway Kafka broker (free ports, temporary K2_DATA_DIR), always stopped.

The broker's address is exported as K2_* environment variables, so services started as
processes by a test find it without further configuration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka.broker import LocalBroker
from services.common.kafka import ensure_topics
from services.common.metrics import free_port
from tests.kafka_helpers import reset_topics


@pytest.fixture(scope="session")
def k2_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k2data")


@pytest.fixture(scope="session")
def broker(k2_data_dir: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        k2_data_dir, port=free_port(), controller_port=free_port(), heap="512m", exit_with_parent=True
    )
    env = {
        "K2_DATA_DIR": str(k2_data_dir),
        "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
        "K2_KAFKA_PORT": str(broker.port),
        "K2_KAFKA_CONTROLLER_PORT": str(broker.controller_port),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        broker.start(wait=True)
        yield broker
    finally:
        broker.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def bootstrap(broker: LocalBroker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
async def topics(bootstrap: str) -> str:
    """The registry's topics exist (created once per session); yields the bootstrap address."""
    await ensure_topics(bootstrap)
    return bootstrap


@pytest.fixture
async def fresh_topics(bootstrap: str) -> str:
    """Every topic deleted and the registry's recreated empty, for a test that counts records."""
    await reset_topics(bootstrap)
    return bootstrap


@pytest.fixture
def k2_env(broker: LocalBroker, k2_data_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for a service process: the session broker, a per-test data dir for its state."""
    data_dir = tmp_path / "k2"
    data_dir.mkdir()
    return {
        "K2_DATA_DIR": str(data_dir),
        "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
        "K2_KAFKA_PORT": str(broker.port),
        "K2_KAFKA_CONTROLLER_PORT": str(broker.controller_port),
        "K2_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
