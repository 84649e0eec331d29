"""Topics exist as declared (read back via the admin API); records round-trip via aiokafka."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.kafka import ensure_topics
from services.common.topics import TOPICS, TopicSpec
from tests.kafka_helpers import produce, read_topic


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
