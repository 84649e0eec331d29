"""Normalizer benchmark: throughput per worker process, live latency, RSS.

`python -m bench.normalizer [--trades N] [--rate R] [--seconds S]` starts a throwaway Kafka broker
(free ports, temp data dir), then:
1. parser-only: trades/s of the pure parsers in this process (no Kafka), for reference;
2. throughput: N trades pre-loaded on the raw topics (Binance single-trade frames, Kraken 4-trade
   frames, Coinbase 2×3-trade envelopes), ONE worker process drains them; trades/s = published
   trades / time from its first to its last published trade (read from its /metrics);
3. latency: a fresh worker, frames produced live at R trades/s for S seconds with received_at = now;
   received_at → normalized measured twice: the worker's histogram (publish time) and a
   read_committed consumer of market.crypto.trades (downstream visibility: includes its fetch);
peak RSS (VmHWM) of the worker in both runs. Targets: ≥ 20,000 trades/s; p99 < 50 ms at
1,000 trades/s; RSS < 250 MB. Results: bench-results/normalizer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    ServiceProcess,
    format_table,
    metric_sum,
    parse_metrics,
    proc_cpu_seconds,
    proc_rss,
    scrape,
    summarize,
    write_results,
)
from deploy.kafka.broker import LocalBroker
from services.common.instruments import default_instruments
from services.common.kafka import PRODUCER_DEFAULTS, ensure_topics
from services.common.metrics import free_port
from services.common.raw import RawHeaders
from services.common.topics import RAW_TOPICS, TRADES
from services.normalizer.parsers import Lineage, parse_frame

WITHIN_MS = 10  # K2_NORMALIZER_BATCH_WITHIN_MS of the workers (--within-ms)
BINANCE = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
KRAKEN = ["BTC/USD", "ETH/USD", "SOL/USD"]
COINBASE = ["BTC-USD", "ETH-USD", "SOL-USD"]


def _iso(us: int) -> str:
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}"


class FrameMaker:
    """Realistic frames, sequential ids per symbol: 16 trades a round (Binance 6, Kraken 4, Coinbase 6)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.seq = 0

    def _next(self, key: str) -> int:
        self.ids[key] = self.ids.get(key, 1000) + 1
        return self.ids[key]

    def round(self, now_us: int) -> list[tuple[str, bytes, bytes, int]]:
        """(exchange, connection, frame, trades) of one round."""
        out = []
        ms = now_us // 1000
        for symbol in BINANCE:
            tid = self._next(symbol)
            frame = json.dumps(
                {
                    "stream": f"{symbol.lower()}@trade",
                    "data": {
                        "e": "trade",
                        "E": ms,
                        "s": symbol,
                        "t": tid,
                        "p": f"{100 + tid % 97}.{tid % 100:02d}",
                        "q": f"0.{tid % 1000:03d}1",
                        "T": ms,
                        "m": tid % 2 == 0,
                        "M": True,
                    },
                }
            ).encode()
            out.append(("binance", "bn-1", frame, 1))
        trades = []
        for symbol in KRAKEN[:1]:
            for _ in range(4):
                tid = self._next(symbol)
                trades.append(
                    f'{{"symbol":"{symbol}","side":"buy","price":67000.{tid % 10},'
                    f'"qty":0.000{tid % 1000 + 1},"ord_type":"market","trade_id":{tid},'
                    f'"timestamp":"{_iso(now_us)}Z"}}'
                )
        out.append(
            (
                "kraken",
                "kr-1",
                ('{"channel":"trade","type":"update","data":[' + ",".join(trades) + "]}").encode(),
                4,
            )
        )
        self.seq += 1
        events = []
        for products in (("BTC-USD", "ETH-USD", "BTC-USD"), ("SOL-USD", "SOL-USD", "SOL-USD")):
            events.append(
                {
                    "type": "update",
                    "trades": [
                        {
                            "trade_id": str(self._next(p)),
                            "product_id": p,
                            "price": "150.25",
                            "size": "0.01",
                            "side": "BUY",
                            "time": _iso(now_us) + "123Z",
                        }
                        for p in products
                    ],
                }
            )
        envelope = {"channel": "market_trades", "sequence_num": self.seq, "events": events}
        n = sum(len(e["trades"]) for e in events)
        out.append(("coinbase", "cb-1", json.dumps(envelope).encode(), n))
        return out


def parser_only(rounds: int = 3000) -> dict[str, Any]:
    maker = FrameMaker()
    instruments = default_instruments()
    now = time.time_ns() // 1000
    frames = [f for _ in range(rounds) for f in maker.round(now)]
    lineage = Lineage("t", 0, 0)
    started = time.perf_counter()
    trades = sum(
        len(parse_frame(ex, frame, now, lineage, instruments).trades) for ex, _c, frame, _n in frames
    )
    elapsed = time.perf_counter() - started
    return {"trades": trades, "frames": len(frames), "seconds": elapsed, "trades_per_s": trades / elapsed}


async def _produce(
    bootstrap: str, frames: list[tuple[str, bytes, bytes, int]], received_ns: int | None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type=str(PRODUCER_DEFAULTS["compression_type"]),
    )
    await producer.start()
    try:
        pending = []
        for i, (exchange, conn, frame, _n) in enumerate(frames):
            headers = RawHeaders(received_ns or time.time_ns(), conn, i + 1).to_kafka()
            pending.append(
                await producer.send(RAW_TOPICS[exchange], frame, key=conn.encode(), headers=headers)
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _worker(broker: LocalBroker, data_dir: Path, app_id: str, batch: int) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {
        "K2_DATA_DIR": str(data_dir),
        "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
        "K2_LOG_LEVEL": "WARNING",
        "K2_METRICS_PORT": str(port),
        "K2_NORMALIZER_APP_ID": app_id,
        "K2_NORMALIZER_BATCH_MAX": str(batch),
        "K2_NORMALIZER_BATCH_WITHIN_MS": str(WITHIN_MS),
    }
    return ServiceProcess("services.normalizer", env=env, name=app_id), f"http://127.0.0.1:{port}/metrics"


def _out(url: str) -> float:
    return _published(parse_metrics(scrape(url)))


def _published(metrics: dict[str, float]) -> float:
    return metric_sum(metrics, "k2_normalizer_trades_out_total")


def throughput(broker: LocalBroker, data_dir: Path, total_trades: int, batch: int) -> dict[str, Any]:
    maker = FrameMaker()
    now_us = time.time_ns() // 1000
    frames: list[tuple[str, bytes, bytes, int]] = []
    trades = 0
    while trades < total_trades:
        for item in maker.round(now_us):
            frames.append(item)
            trades += item[3]
    asyncio.run(_produce(broker.bootstrap, frames, now_us * 1000))
    proc, url = _worker(broker, data_dir, "bench-throughput", batch)
    proc.start()
    try:
        proc.wait_http(url)
        samples: list[tuple[float, float]] = []
        peak = 0
        # The window opens at the first sample in which the worker has consumed anything (its group
        # join and takeover excluded), not at its first publication: parsing done before that is
        # part of the work being timed.
        first: tuple[float, float] | None = None
        first_cpu: float | None = None
        first_published: float | None = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            metrics = parse_metrics(scrape(url))
            out = _published(metrics)
            t = time.monotonic()
            if first is None and metric_sum(metrics, "k2_normalizer_frames_in_total") > 0:
                first = (t, out)
                first_cpu = proc_cpu_seconds(proc.pid) if proc.pid else None
            if first_published is None and out > 0:
                first_published = t
            samples.append((t, out))
            peak = max(peak, (proc_rss(proc.pid) or (0, 0))[1]) if proc.pid else peak
            if out >= trades:
                break
            time.sleep(0.25)
        cpu = proc_cpu_seconds(proc.pid) if proc.pid else None
        assert first is not None and first_published is not None, proc.output()
        last_t, last_out = samples[-1]
        rate = (last_out - first[1]) / max(1e-9, last_t - first[0])
        # Contention-proof figure: trades per CPU-second the worker itself spent (on a shared,
        # overloaded machine wall-clock rate measures the neighbours as much as the worker).
        cpu_spent = (cpu - first_cpu) if cpu is not None and first_cpu is not None else None
        return {
            "trades_per_worker_cpu_s": (last_out - first[1]) / cpu_spent if cpu_spent else None,
            "load_average": os.getloadavg(),
            "trades": trades,
            "frames": len(frames),
            "published": last_out,
            "seconds": last_t - first[0],
            "first_published_after_s": first_published - first[0],
            "trades_per_s": rate,
            "peak_rss_mb": peak / 2**20,
            "worker_cpu_s": cpu,
        }
    finally:
        proc.stop()


async def _consume_latency(bootstrap: str, stop_at: float, expected: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        TRADES,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="latest",
        # as the services' consumers (services/common/stream.py): the broker answers a parked
        # read_committed fetch as soon as a commit moves the last stable offset, so waiting longer adds
        # no latency, while 5 ms made the broker answer ~200 empty fetches a second that no real
        # downstream consumer sends (back to back: out→visible p50 unchanged, total p99 lower)
        fetch_max_wait_ms=50,
        enable_auto_commit=False,
    )
    await consumer.start()
    lat: list[float] = []
    try:
        await consumer.seek_to_end()
        while time.monotonic() < stop_at and len(lat) < expected:
            batch = await consumer.getmany(timeout_ms=100)
            now_us = time.time_ns() // 1000
            for records in batch.values():
                for record in records:
                    received = json.loads(record.value)["received_at"]
                    lat.append((now_us - received) / 1000)
    finally:
        await consumer.stop()
    return lat


async def _live(bootstrap: str, rate: int, seconds: float, maker: FrameMaker) -> tuple[list[float], int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    expected = 0
    consume = asyncio.ensure_future(_consume_latency(bootstrap, time.monotonic() + seconds + 15, 10**9))
    await asyncio.sleep(1.0)  # let the consumer position itself at the end
    try:
        started = time.monotonic()
        sent = 0
        i = 0
        while time.monotonic() - started < seconds:
            target = int((time.monotonic() - started) * rate)
            while sent < target:
                for exchange, conn, frame, n in maker.round(time.time_ns() // 1000):
                    i += 1
                    headers = RawHeaders(time.time_ns(), conn, i).to_kafka()
                    await producer.send(RAW_TOPICS[exchange], frame, key=conn.encode(), headers=headers)
                    sent += n
            await asyncio.sleep(0.005)
        expected = sent
    finally:
        await producer.stop()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not consume.done():
        await asyncio.sleep(0.2)
    consume.cancel()
    try:
        lat = await consume
    except asyncio.CancelledError:
        lat = []
    return lat, expected


def _hist_quantile(
    metrics: dict[str, float], name: str, q: float, since: dict[str, float] | None = None
) -> float | None:
    """The upper bound of the histogram bucket holding quantile `q` (all label sets summed), counting
    only the observations made after the scrape `since` when it is given."""
    buckets: dict[float, float] = {}
    for key, value in metrics.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            earlier = (since or {}).get(key, 0.0)
            buckets[bound] = buckets.get(bound, 0.0) + value - earlier
    if not buckets or not buckets[float("inf")]:
        return None
    total = buckets[float("inf")]
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return None


def latency(
    broker: LocalBroker, data_dir: Path, rate: int, seconds: float, batch: int, warmup: float = 0.0
) -> dict[str, Any]:
    proc, url = _worker(broker, data_dir, "bench-latency", batch)
    proc.start()
    try:
        proc.wait_http(url)
        # warm-up: wait until the worker owns its partitions and publishes
        maker = FrameMaker()
        maker.ids = {k: 10**8 for k in BINANCE + KRAKEN + COINBASE}  # above the throughput run's ids
        asyncio.run(_warmup(broker.bootstrap, url, maker))
        # the live runs continue the warm-up's trade ids: lower ids would be dropped as duplicates
        if warmup > 0:  # steady state first: a just-started broker's JIT stretches the tail
            asyncio.run(_live(broker.bootstrap, rate, warmup, maker))
        scraped = parse_metrics(scrape(url))
        before = _load(proc.pid, broker.pid(), scraped)
        lat, sent = asyncio.run(_live(broker.bootstrap, rate, seconds, maker))
        metrics = parse_metrics(scrape(url))
        load = _load_between(before, _load(proc.pid, broker.pid(), metrics))
        peak = (proc_rss(proc.pid) or (0, 0))[1] if proc.pid else 0
        stats = summarize(lat)
        hist = "k2_normalizer_received_to_normalized_seconds"
        return {
            "rate": rate,
            "seconds": seconds,
            "warmup_seconds": warmup,
            "load_average": os.getloadavg(),
            "sent_trades": sent,
            "received_downstream": len(lat),
            "downstream_ms": stats,
            # the measured run only (not the warm-up's first, slower minute)
            "histogram_p99_bucket_ms": (_hist_quantile(metrics, hist, 0.99, scraped) or 0) * 1000,
            "histogram_p50_bucket_ms": (_hist_quantile(metrics, hist, 0.50, scraped) or 0) * 1000,
            "peak_rss_mb": peak / 2**20,
            **load,
        }
    finally:
        proc.stop()


def _load(worker: int | None, broker: int | None, metrics: dict[str, float]) -> dict[str, float]:
    """CPU seconds so far of the worker, the broker and this process (producer + latency consumer),
    the worker's stage-2 transactions and published trades, and the clock."""
    return {
        "worker": (proc_cpu_seconds(worker) if worker else None) or 0.0,
        "broker": (proc_cpu_seconds(broker) if broker else None) or 0.0,
        "bench": time.process_time(),
        "transactions": metric_sum(metrics, "k2_normalizer_transaction_seconds_count"),
        "trades": _published(metrics),
        "clock": time.monotonic(),
    }


def _load_between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the measured live run cost: each process's CPU (% of one core) and the stage-2
    transactions it took. At 1,000 trades/s a transaction carries only a few trades, so most of the
    work is per transaction (AddPartitionsToTxn, Produce, EndTxn, and the coordinator's log writes
    and markers), not per trade."""
    elapsed = max(after["clock"] - before["clock"], 1e-9)
    transactions = after["transactions"] - before["transactions"]
    trades = after["trades"] - before["trades"]
    return {
        "cpu_percent": {
            name: round(100 * (after[name] - before[name]) / elapsed, 1)
            for name in ("worker", "broker", "bench")
        },
        "transactions_per_s": round(transactions / elapsed, 1),
        "trades_per_transaction": round(trades / transactions, 2) if transactions else None,
    }


async def _warmup(bootstrap: str, url: str, maker: FrameMaker) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        await _produce(bootstrap, maker.round(time.time_ns() // 1000), None)
        await asyncio.sleep(0.5)
        if _out(url) > 0:
            return
    raise RuntimeError("the latency worker never published")


async def _reset_raw(bootstrap: str) -> None:
    """Delete and recreate the topics so the throughput run starts from nothing."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if not t.startswith("__")]
        await admin.delete_topics(doomed)
        while set(doomed) & set(await admin.list_topics()):
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    for _ in range(120):
        try:
            await ensure_topics(bootstrap)
            return
        except Exception:
            await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.normalizer")
    parser.add_argument(
        "--trades", type=int, default=200_000, help="trades pre-loaded for the throughput run"
    )
    parser.add_argument("--rate", type=int, default=1000, help="trades/s of the live latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the live latency run")
    parser.add_argument(
        "--warmup",
        type=float,
        default=90.0,
        # a fresh broker (and its JIT) needs ~45 s of this traffic to reach its steady state: measured
        # per 15 s window, p99 falls from ~210 ms to 40-70 ms, then stays there
        help="seconds of live traffic before the latency is measured",
    )
    parser.add_argument("--batch", type=int, default=2000, help="K2_NORMALIZER_BATCH_MAX of the workers")
    parser.add_argument("--within-ms", type=int, default=10, help="K2_NORMALIZER_BATCH_WITHIN_MS")
    args = parser.parse_args(argv)
    global WITHIN_MS
    WITHIN_MS = args.within_ms
    tmp = Path(tempfile.mkdtemp(prefix="k2-bench-normalizer-"))
    broker = LocalBroker(
        tmp, port=free_port(), controller_port=free_port(), heap="512m", exit_with_parent=True
    )
    results: dict[str, Any] = {"targets": {"trades_per_s": 20_000, "p99_ms_at_1000_per_s": 50, "rss_mb": 250}}
    try:
        results["parser_only"] = parser_only()
        broker.start(wait=True)
        asyncio.run(ensure_topics(broker.bootstrap))
        # latency first, on empty topics: a new consumer group starts at the earliest offset
        results["latency"] = latency(broker, tmp, args.rate, args.seconds, args.batch, args.warmup)
        asyncio.run(_reset_raw(broker.bootstrap))
        results["throughput"] = throughput(broker, tmp, args.trades, args.batch)
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    t, lat = results["throughput"], results["latency"]
    rows = [
        {
            "measure": "parser only (in process)",
            "value": f"{results['parser_only']['trades_per_s']:,.0f} trades/s",
            "target": "-",
        },
        {
            "measure": "worker throughput (1 process)",
            "value": f"{t['trades_per_s']:,.0f} trades/s",
            "target": ">= 20,000",
        },
        {
            "measure": "worker throughput per worker CPU-second",
            "value": f"{t['trades_per_worker_cpu_s'] or 0:,.0f} trades/cpu-s",
            "target": ">= 20,000",
        },
        {
            "measure": f"p99 received_at→visible downstream @ {lat['rate']}/s",
            "value": f"{lat['downstream_ms']['p99'] or 0:.1f} ms "
            f"(p50 {lat['downstream_ms']['p50'] or 0:.1f})",
            "target": "< 50 ms",
        },
        {
            "measure": "p99 received_at→published (histogram bucket, live run)",
            "value": f"<= {lat['histogram_p99_bucket_ms']:.0f} ms",
            "target": "< 50 ms",
        },
        {
            "measure": f"CPU during the live run @ {lat['rate']}/s (% of a core)",
            "value": ", ".join(f"{k} {v:.0f}%" for k, v in lat["cpu_percent"].items())
            + f"; {lat['transactions_per_s']:.0f} transactions/s",
            "target": "-",
        },
        {
            "measure": "peak RSS (throughput / latency run)",
            "value": f"{t['peak_rss_mb']:.0f} / {lat['peak_rss_mb']:.0f} MB",
            "target": "< 250 MB",
        },
    ]
    print(format_table(rows, ["measure", "value", "target"]))
    print(f"results: {write_results('normalizer', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
