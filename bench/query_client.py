"""A lean HTTP/1.1 load generator for bench.query, run in its own process (it shares the cores).

Each of `concurrency` clients owns one keep-alive connection and sends its next GET as soon as the
previous answer is complete (closed loop, no think time). A response is read whole into one
preallocated buffer (one copy from the kernel, no per-chunk Python objects) and checked: status 200
and exactly Content-Length bytes; the first body of a scenario is parsed as JSON and its row count
checked. Like browsers, curl --compressed, requests and httpx, a client offers gzip unless the
scenario says otherwise: latency is to the last byte of the response as sent (as wrk and ab measure
it); the first body is inflated to be checked, the others are not (inflating a day of 1m candles costs
the client ~2 ms, more than the whole request costs the server). httpx costs ~5 ms of client CPU per
request and aiohttp ~0.9 ms per 0.7 MB body on this machine — enough to make the client, not the
server, the bottleneck on 2 cores.
The process reports its own CPU time so the client's share of the machine is visible.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import uvloop


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; `get()` sends a request and returns (status, body)."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.filled = 0
        self.head_end = -1
        self.need = -1  # total bytes of the current response once its head is parsed
        self.status = 0
        self.gzipped = False
        self.done: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = ConnectionError(f"connection closed: {exc!r}" if exc else "connection closed")
        if self.done is not None and not self.done.done():
            self.done.set_exception(self.closed)

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.filled < 65536:
            grown = bytearray(max(2 * len(self.buf), self.need if self.need > 0 else 0))
            grown[: self.filled] = self.view[: self.filled]
            self.view.release()
            self.buf, self.view = grown, memoryview(grown)
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if self.head_end < 0:
            end = self.buf.find(b"\r\n\r\n", 0, self.filled)
            if end < 0:
                return
            self.head_end = end + 4
            head = bytes(self.buf[: self.head_end]).lower()
            self.status = int(head[9:12])
            self.gzipped = b"\r\ncontent-encoding: gzip\r\n" in head
            start = head.index(b"content-length:") + 15
            length = int(head[start : head.index(b"\r\n", start)])
            self.need = self.head_end + length
            if len(self.buf) < self.need:  # grow once to the whole response
                grown = bytearray(self.need + 65536)
                grown[: self.filled] = self.view[: self.filled]
                self.view.release()
                self.buf, self.view = grown, memoryview(grown)
        if self.filled >= self.need and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def get(self, request: bytes, keep_body: bool) -> tuple[int, bytes | None, int]:
        if self.closed is not None:
            raise self.closed
        self.filled, self.head_end, self.need = 0, -1, -1
        self.done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        await self.done
        size = self.need - self.head_end
        body = bytes(self.view[self.head_end : self.need]) if keep_body else None
        if body is not None and self.gzipped:
            body = gzip.decompress(body)
        return self.status, body, size


def _request(host: str, port: int, target: str, accept_gzip: bool) -> bytes:
    encoding = "gzip" if accept_gzip else "identity"
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nAccept-Encoding: {encoding}\r\n\r\n"
    ).encode()


@dataclass(frozen=True)
class Load:
    """One scenario: `concurrency` clients send up to `max_requests` GETs in all, for at most
    `max_seconds`; request i asks for targets[i % len(targets)]; the first body must hold
    `expect_rows` rows when given; `accept_gzip` offers gzip (Accept-Encoding)."""

    host: str
    port: int
    targets: list[str]
    concurrency: int
    max_requests: int
    max_seconds: float
    expect_rows: int | None = None
    accept_gzip: bool = True


async def _load(load: Load) -> dict:
    loop = asyncio.get_running_loop()
    requests = [_request(load.host, load.port, t, load.accept_gzip) for t in load.targets]
    expect_rows = load.expect_rows
    latencies: list[float] = []
    errors = 0
    body_bytes = 0
    counter = iter(range(load.max_requests))
    deadline = time.monotonic() + load.max_seconds

    async def client() -> None:
        nonlocal errors, body_bytes
        _, conn = await loop.create_connection(Connection, load.host, load.port)
        try:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    status, body, size = await conn.get(requests[i % len(requests)], i == 0)
                except ConnectionError:
                    errors += 1
                    return
                latencies.append(time.perf_counter() - started)
                body_bytes += size
                if status != 200:
                    errors += 1
                elif body is not None and expect_rows is not None:
                    assert json.loads(body)["count"] == expect_rows, body[:200]
        finally:
            if conn.transport is not None:
                conn.transport.close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(load.concurrency)))
    elapsed = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
        "mb_per_s": round(body_bytes / elapsed / 1e6, 1) if elapsed else 0.0,
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_ms_per_request": round(client_cpu / max(1, len(latencies)) * 1000, 3),
    }


def _run(load: Load) -> dict:
    return uvloop.run(_load(load))


def run_load(load: Load) -> dict:
    """Run one scenario in a fresh process."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run, load).result()
