"""The capture file (design.md): one JSON object per line, gzip when the name ends in `.gz`.

`{"exchange": .., "received_at": <ns>, "frame": "<text exactly as received>"}` plus, written by
K2 and optional for readers: `connection_id` and `seq` (so a replay publishes the very same
keys and headers), and `kind` (`marker` for K2's own disconnect markers; absent for frames).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from services.common.instruments import EXCHANGES
from services.common.raw import KIND_FRAME, KIND_MARKER
from services.feed.records import RawRecord


class CaptureError(ValueError):
    """A capture line is not in the capture format."""


def open_capture(path: Path | str, mode: str) -> IO[str]:
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0: the same frames give the same bytes (the demo capture is reproducible).
        if "w" in mode:
            raw = open(path, mode.replace("t", "") + "b")  # noqa: SIM115 - wrapped below
            return io.TextIOWrapper(
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename=""), encoding="utf-8", newline="\n"
            )
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="\n")
    return open(path, mode, encoding="utf-8", newline="\n")


def encode_line(record: RawRecord) -> str:
    line: dict[str, object] = {
        "exchange": record.exchange,
        "received_at": record.received_at_ns,
        "frame": record.value.decode(),
        "connection_id": record.connection_id,
        "seq": record.seq,
    }
    if record.kind != KIND_FRAME:
        line["kind"] = record.kind
    return json.dumps(line, ensure_ascii=False) + "\n"


def decode_line(line: str, counters: dict[str, int] | None = None) -> RawRecord:
    """A capture line as the raw record live would have published (ids derived when absent)."""
    try:
        data = orjson.loads(line)  # the frame is a JSON string, so no number is ever a float here
    except orjson.JSONDecodeError as exc:
        raise CaptureError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CaptureError("a capture line must be a JSON object")
    exchange, received_at, frame = data.get("exchange"), data.get("received_at"), data.get("frame")
    if exchange not in EXCHANGES or not isinstance(received_at, int) or not isinstance(frame, str):
        raise CaptureError("a capture line needs exchange, received_at (int ns) and frame (text)")
    kind = data.get("kind", KIND_FRAME)
    if kind not in (KIND_FRAME, KIND_MARKER):
        raise CaptureError(f"unknown kind {kind!r}")
    connection_id = data.get("connection_id") or f"{exchange}-capture"
    seq = data.get("seq")
    if not isinstance(seq, int):
        counters = counters if counters is not None else {}
        seq = counters[connection_id] = counters.get(connection_id, 0) + 1
    return RawRecord(exchange, frame.encode(), received_at, str(connection_id), seq, kind)


def read_capture(path: Path | str) -> Iterator[RawRecord]:
    counters: dict[str, int] = {}
    with open_capture(path, "rt") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield decode_line(line, counters)
            except CaptureError as exc:
                raise CaptureError(f"{path}:{number}: {exc}") from exc


@dataclass
class CaptureWriter:
    """A Sink that appends what the connectors receive to a capture file (the `record` command)."""

    handle: IO[str]
    written: int = 0

    @classmethod
    def open(cls, path: Path | str) -> CaptureWriter:
        return cls(open_capture(path, "wt"))

    def full(self) -> bool:
        return False

    async def publish(self, record: RawRecord) -> None:
        self.handle.write(encode_line(record))
        self.written += 1

    def close(self) -> None:
        self.handle.close()
