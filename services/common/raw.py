"""The raw-topic contract between the feed and its readers (normalizer, lakewriter).

A record on `market.crypto.trades.<exchange>.raw` is either
- a frame: value = the WebSocket text frame exactly as received (UTF-8 bytes), or
- a marker (header `k2_kind: marker`): value = `DisconnectMarker` JSON, written after a
  reconnect to state the interval during which the feed had no connection.

Headers (all ASCII): `received_at` (ns since epoch, UTC), `connection_id`, `seq` (frame
number within the connection, from 1), `k2_kind` (`frame` | `marker`).
Key: the connection id, so all frames of one connection stay in one partition, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson

HEADER_RECEIVED_AT = "received_at"
HEADER_CONNECTION_ID = "connection_id"
HEADER_SEQ = "seq"
HEADER_KIND = "k2_kind"
KIND_FRAME = "frame"
KIND_MARKER = "marker"
MARKER_TYPE = "k2.disconnect"
MAX_FRAME_BYTES = 1024 * 1024  # larger frames are not published raw (counted, and logged by the feed)


class RawHeaders(NamedTuple):
    """A raw record's headers. A NamedTuple (immutable, like the frozen dataclasses here) because
    the normalizer and the lake writer parse one per frame: a frozen dataclass's __init__ alone
    cost ~1 µs of from_kafka's ~2.7 µs."""

    received_at_ns: int
    connection_id: str
    seq: int
    kind: str = KIND_FRAME

    def to_kafka(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_RECEIVED_AT, str(self.received_at_ns).encode()),
            (HEADER_CONNECTION_ID, self.connection_id.encode()),
            (HEADER_SEQ, str(self.seq).encode()),
            (HEADER_KIND, self.kind.encode()),
        ]

    @classmethod
    def from_kafka(cls, headers: Iterable[tuple[str, bytes]] | None) -> RawHeaders:
        """Parse Kafka headers; raises ValueError when a required header is missing or bad."""
        try:
            values = dict(headers or ())
            seq = values.get(HEADER_SEQ)
            kind = values.get(HEADER_KIND)
            return cls(
                int(values[HEADER_RECEIVED_AT]),
                values[HEADER_CONNECTION_ID].decode(),
                0 if seq is None else int(seq),
                KIND_FRAME if kind is None else kind.decode(),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"bad raw-record headers: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class DisconnectMarker:
    """After a reconnect: the feed had no connection for `exchange` from down_from_ns to down_to_ns."""

    exchange: str
    connection_id: str  # the connection that was lost
    new_connection_id: str  # the connection that replaced it
    down_from_ns: int
    down_to_ns: int
    reason: str
    symbols: tuple[str, ...] = ()  # native symbols the lost connection carried

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "type": MARKER_TYPE,
                "exchange": self.exchange,
                "connection_id": self.connection_id,
                "new_connection_id": self.new_connection_id,
                "down_from_ns": self.down_from_ns,
                "down_to_ns": self.down_to_ns,
                "reason": self.reason,
                "symbols": list(self.symbols),
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> DisconnectMarker:
        data = orjson.loads(payload)
        if not isinstance(data, dict) or data.get("type") != MARKER_TYPE:
            raise ValueError("not a K2 disconnect marker")
        return cls(
            exchange=data["exchange"],
            connection_id=data["connection_id"],
            new_connection_id=data["new_connection_id"],
            down_from_ns=int(data["down_from_ns"]),
            down_to_ns=int(data["down_to_ns"]),
            reason=str(data.get("reason", "")),
            symbols=tuple(data.get("symbols", ())),
        )
