"""Topics exist as declared (read back via the admin API); records round-trip via aiokafka and Faust."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.kafka import ensure_topics
from services.common.metrics import free_port
from services.common.topics import TOPICS, TopicSpec
from tests.kafka_helpers import produce, read_topic, wait_for
from tests.processes import ServiceProcess


async def test_topics_have_declared_partitions_and_configs(topics: str) -> None:
    assert await ensure_topics(topics) == []  # idempotent: nothing left to create
    admin = AIOKafkaAdminClient(bootstrap_servers=topics)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics([s.name for s in TOPICS])}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in TOPICS]
        )
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                name, entries = resource[3], resource[4]
                configs[name] = {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()
    for spec in TOPICS:
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
        for key, value in spec.configs().items():
            assert configs[spec.name][key] == value, (spec.name, key)


async def test_aiokafka_round_trip_keeps_key_value_headers(topics: str) -> None:
    name = f"k2.test.roundtrip.{uuid.uuid4().hex[:8]}"
    await ensure_topics(topics, [TopicSpec(name, 1, key="-", value="-")])
    sent = [(f"k{i}".encode(), f"v{i}".encode(), [("n", str(i).encode())]) for i in range(100)]
    await produce(topics, name, sent)
    records = await read_topic(topics, name)
    assert [(r.key, r.value, list(r.headers)) for r in records] == sent


async def test_minimal_faust_agent_round_trip(topics: str, k2_env: dict[str, str]) -> None:
    await ensure_topics(
        topics,
        [TopicSpec("k2.test.in", 1, key="-", value="-"), TopicSpec("k2.test.out", 1, key="-", value="-")],
    )
    env = {
        **k2_env,
        "ECHO_APP_ID": f"k2-echo-{uuid.uuid4().hex[:6]}",
        "ECHO_WEB_PORT": str(free_port()),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    app_dir = Path(k2_env["K2_DATA_DIR"])
    worker = ServiceProcess(
        "tests.foundation.faust_echo",
        ["worker", "--loglevel=warn", f"--web-port={env['ECHO_WEB_PORT']}"],
        env=env,
        name="faust-echo",
    )
    os.chdir(app_dir)  # Faust writes its data dir in the working directory
    with worker:
        await produce(topics, "k2.test.in", [(b"k", b"hello faust", None)])

        async def echoed() -> bool:
            assert worker.running, worker.output()[-3000:]
            return any(r.value == b"hello faust" for r in await read_topic(topics, "k2.test.out"))

        await wait_for(echoed, timeout=90, message="the Faust agent to echo the record")
