"""Streamed exports: DuckDB record batches → CSV / Parquet / Arrow IPC bytes, a batch at a time.

A year of 1m candles or a million trades never sits in memory: DuckDB yields record batches,
each is encoded and sent, then dropped. Runs in Starlette's thread pool (sync generators).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from services.query import metrics

BATCH_ROWS = 65_536
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
SUFFIX = {"csv": "csv", "parquet": "parquet", "arrow": "arrow"}


class _Sink(io.RawIOBase):
    """A write-only file whose written bytes are drained after each batch."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def stream(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: list, fmt: str, route: str
) -> Iterator[bytes]:
    """Execute and encode batch by batch; the cursor is closed when the stream ends or is abandoned."""
    try:
        reader = cursor.execute(sql, params).to_arrow_reader(BATCH_ROWS)
        sink = _Sink()
        schema = reader.schema
        if fmt == "parquet":
            writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd")
        elif fmt == "arrow":
            writer = ipc.new_stream(pa.PythonFile(sink, mode="w"), schema)
        else:
            writer = pacsv.CSVWriter(pa.PythonFile(sink, mode="w"), schema)
        rows = 0
        for batch in reader:
            if batch.num_rows == 0:
                continue
            if fmt == "parquet":
                writer.write_table(pa.Table.from_batches([batch]))
            else:
                writer.write_batch(batch)
            rows += batch.num_rows
            data = sink.drain()
            if data:
                yield data
        writer.close()
        data = sink.drain()
        if data:
            yield data
        metrics.ROWS.labels(route).inc(rows)
    finally:
        cursor.close()
