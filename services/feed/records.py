"""A raw record on its way to Kafka (or to a capture file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.common.raw import (
    HEADER_CONNECTION_ID,
    HEADER_KIND,
    HEADER_RECEIVED_AT,
    HEADER_SEQ,
    KIND_FRAME,
)
from services.common.topics import RAW_TOPICS


@dataclass(slots=True)
class RawRecord:
    exchange: str
    value: bytes
    received_at_ns: int
    connection_id: str
    seq: int
    kind: str = KIND_FRAME

    @property
    def topic(self) -> str:
        return RAW_TOPICS[self.exchange]

    @property
    def key(self) -> bytes:
        return self.connection_id.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        """RawHeaders(...).to_kafka(), written out: this runs once per frame (tests check they agree)."""
        return [
            (HEADER_RECEIVED_AT, b"%d" % self.received_at_ns),
            (HEADER_CONNECTION_ID, self.connection_id.encode()),
            (HEADER_SEQ, b"%d" % self.seq),
            (HEADER_KIND, self.kind.encode()),
        ]


class Sink(Protocol):
    """Where connectors put what they receive: Kafka (KafkaPublisher) or a file (CaptureWriter)."""

    def full(self) -> bool: ...

    async def publish(self, record: RawRecord) -> None: ...
