"""`python -m bench.lakewriter`: the lake writer's throughput, commit latency and time to visibility.

Starts its own Kafka broker (free ports, temp dir) and measures:
1. commit latency of 10,000-row silver batches (LakeWriter.commit in-process: Arrow build, Parquet
   write, manifests, catalog commit) — target p95 < 1 s;
2. throughput: N trades pre-loaded on market.crypto.trades, one writer process with default settings,
   rows/s from its partition assignment until silver holds all N — target >= 50,000 rows/s;
3. latency: trades produced at a steady low rate with received_at = now; each row's latency is the
   commit time of the snapshot that made it visible minus its received_at — target p95 < 15 s.
Writes bench-results/lakewriter.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from aiokafka import AIOKafkaProducer

from bench.common import ServiceProcess, format_table, proc_cpu_seconds, summarize, write_results
from deploy.kafka.broker import LocalBroker
from services.common.catalog import open_catalog
from services.common.kafka import PRODUCER_DEFAULTS, ensure_topics
from services.common.metrics import free_port
from services.common.schemas import Trade
from services.common.settings import K2Settings
from services.common.tables import SILVER_TRADES
from services.common.topics import RAW_TOPICS, TRADES
from services.lakewriter.convert import trades_table
from services.lakewriter.writer import Batch, LakeWriter

SYMBOLS = [
    ("binance", "BTC/USDT", "BTCUSDT"),
    ("binance", "ETH/USDT", "ETHUSDT"),
    ("kraken", "BTC/USD", "BTC/USD"),
    ("coinbase", "ETH/USD", "ETH-USD"),
    ("coinbase", "BTC/USD", "BTC-USD"),
]


def make_trade(i: int, now_us: int) -> Trade:
    exchange, symbol, native = SYMBOLS[i % len(SYMBOLS)]
    price = Decimal(60000 + i % 5000) + Decimal(i % 997) / Decimal(1000)
    qty = Decimal(i % 1000 + 1) / Decimal(100000)
    return Trade(
        exchange,
        symbol,
        native,
        str(i),
        now_us - 1000,
        now_us,
        price,
        qty,
        price * qty,
        "BUY" if i % 2 else "SELL",
        RAW_TOPICS[exchange],
        i % 3,
        i,
    )


def bench_commit(data_dir: Path, batches: int) -> dict[str, Any]:
    writer = LakeWriter(open_catalog(K2Settings(data_dir=data_dir)), writer_id="bench")
    writer.ensure_tables([SILVER_TRADES])
    now = int(time.time() * 1_000_000)
    seconds = []
    for b in range(batches):
        # As the service buffers them: the fetch's values decoded into Arrow (outside the commit).
        chunk = trades_table([make_trade(b * 10_000 + i, now).encode() for i in range(10_000)])
        assert chunk is not None
        tp = (TRADES, b % 6)
        result = writer.commit(Batch(SILVER_TRADES, chunks={tp: [chunk]}, end={tp: (b // 6 + 1) * 10_000}))
        seconds.append(result.seconds)
    return {"batch_rows": 10_000, **{f"commit_{k}_s": v for k, v in summarize(seconds).items()}}


async def produce(bootstrap: str, count: int, start: int, rate: float | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for i in range(start, start + count):
            trade = make_trade(i, int(time.time() * 1_000_000))
            futures.append(await producer.send(TRADES, trade.encode(), key=trade.key.encode()))
            if rate is not None:
                delay = started + (i - start + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def silver_count(catalog: Any) -> int:
    try:
        snapshot = catalog.load_table(f"market.{SILVER_TRADES}").current_snapshot()
    except Exception:
        return 0
    return int(snapshot.summary["total-records"] or 0) if snapshot is not None else 0


def wait_until(condition: Any, timeout: float, what: str, proc: ServiceProcess | None = None) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        if proc is not None and not proc.running:
            raise RuntimeError(f"writer died: {proc.log_path}")
        time.sleep(0.1)
    raise TimeoutError(what)


def assigned(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    return any(
        line.startswith("k2_lakewriter_assigned_partitions ") and float(line.split()[1]) > 0
        for line in text.splitlines()
    )


def visibility_latencies(catalog: Any, since_ms: int) -> list[float]:
    """received → visible for every row committed after since_ms: snapshot commit time − received_at."""
    table = catalog.load_table(f"market.{SILVER_TRADES}")
    committed = {s.snapshot_id: s.timestamp_ms for s in table.metadata.snapshots}
    latencies: list[float] = []
    for manifest in table.current_snapshot().manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io):
            at_ms = committed.get(entry.snapshot_id)
            if at_ms is None or at_ms < since_ms:
                continue
            path = entry.data_file.file_path.removeprefix("file://")
            received = pq.read_table(path, columns=["received_at"]).column("received_at").cast("int64")
            latencies.extend((at_ms * 1000 - r) / 1e6 for r in received.to_pylist())
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lakewriter")
    parser.add_argument("--rows", type=int, default=300_000, help="trades pre-loaded for the throughput run")
    parser.add_argument("--commit-batches", type=int, default=30, help="10k-row commits to time")
    parser.add_argument("--latency-rate", type=float, default=300.0, help="trades/s in the latency run")
    parser.add_argument("--latency-seconds", type=float, default=40.0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="k2-bench-lakewriter-") as tmp:
        tmp_path = Path(tmp)
        broker = LocalBroker(
            tmp_path / "broker",
            port=free_port(),
            controller_port=free_port(),
            heap="512m",
            exit_with_parent=True,
        )
        broker.start(wait=True)
        try:
            asyncio.run(ensure_topics(broker.bootstrap))
            print("1/3 commit latency of 10k-row batches ...", flush=True)
            results["commit"] = bench_commit(tmp_path / "commit", args.commit_batches)

            print(f"2/3 throughput: producing {args.rows:,} trades ...", flush=True)
            asyncio.run(produce(broker.bootstrap, args.rows, 0))
            data_dir = tmp_path / "writer"
            port = free_port()
            env = {
                "K2_DATA_DIR": str(data_dir),
                "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
                "K2_METRICS_PORT": str(port),
                "K2_LAKEWRITER_TOPICS": "trades",
                "K2_LAKEWRITER_MAINTAIN_INTERVAL_SECONDS": "0",
            }
            proc = ServiceProcess("services.lakewriter", env=env, log_dir=tmp_path, name="lakewriter").start()
            catalog = open_catalog(K2Settings(data_dir=data_dir))
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                t0 = wait_until(lambda: assigned(url), 120, "writer assignment", proc)
                cpu0 = proc_cpu_seconds(proc.pid) if proc.pid else None
                t1 = wait_until(lambda: silver_count(catalog) >= args.rows, 600, "all rows in silver", proc)
                cpu1 = proc_cpu_seconds(proc.pid) if proc.pid else None
                results["throughput"] = {
                    "rows": args.rows,
                    "seconds": round(t1 - t0, 2),
                    "rows_per_s": round(args.rows / (t1 - t0)),
                    "writer_cpu_s": round(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
                }

                print(
                    f"3/3 latency: {args.latency_rate:g} trades/s for {args.latency_seconds:g} s ...",
                    flush=True,
                )
                since_ms = int(time.time() * 1000)
                n = int(args.latency_rate * args.latency_seconds)
                asyncio.run(produce(broker.bootstrap, n, args.rows, rate=args.latency_rate))
                wait_until(lambda: silver_count(catalog) >= args.rows + n, 120, "latency rows visible", proc)
                latencies = visibility_latencies(catalog, since_ms)
                results["visibility"] = {f"latency_{k}_s": v for k, v in summarize(latencies).items()}
            finally:
                proc.stop()
        finally:
            broker.stop()
    rows = [
        {"measure": measure, "value": value, "target": target}
        for measure, value, target in (
            ("silver rows/s, one writer", results["throughput"]["rows_per_s"], ">= 50,000"),
            ("commit p95, 10k-row batch (s)", results["commit"]["commit_p95_s"], "< 1"),
            ("commit p50, 10k-row batch (s)", results["commit"]["commit_p50_s"], ""),
            ("received → visible p50 (s)", results["visibility"]["latency_p50_s"], ""),
            ("received → visible p95 (s)", results["visibility"]["latency_p95_s"], "< 15"),
        )
    ]
    print(format_table(rows))
    print(f"results: {write_results('lakewriter', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
