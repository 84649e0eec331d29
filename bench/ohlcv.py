"""`python -m bench.ohlcv`: OHLCV worker throughput, live-update latency and final-candle latency.

Starts its own broker (free ports, temp data dir) and one OHLCV worker process, then:
1. throughput: N trades of last week (all six timeframes, S symbols) are produced onto
   market.crypto.trades *before* the worker starts; the worker's trades_in counter is sampled and
   the rate between 10% and 100% of the backlog is the per-worker throughput (startup excluded);
2. live: trades stamped "now" at a steady rate (default 1,000/s) for a while; a read_committed
   consumer of market.crypto.ohlcv.live notes, per trade, when the first live 1m update that
   includes it (same candle, trade_count >= its rank) arrives: produce-send → receive latency;
3. close: during the live phase, every final 1m candle's arrival minus (window end + grace), as a
   client sees it, plus the worker's own k2_ohlcv_close_latency_seconds histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    ServiceProcess,
    format_table,
    metric_sum,
    parse_metrics,
    scrape,
    summarize,
    write_results,
)
from deploy.kafka.broker import LocalBroker
from services.common.decimals import multiply
from services.common.kafka import PRODUCER_DEFAULTS, ensure_topics
from services.common.metrics import free_port
from services.common.schemas import Candle, Trade
from services.common.topics import OHLCV, OHLCV_LIVE, TRADES

DAY = 86_400_000_000
MINUTE = 60_000_000


def symbols(count: int) -> list[tuple[str, str]]:
    bases = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC", "BCH", "ATOM"]
    out = [(ex, f"{b}/USD") for b in bases for ex in ("binance", "kraken", "coinbase")]
    return out[:count]


def make_trade(rng: random.Random, trade_id: int, ts: int, exchange: str, symbol: str) -> Trade:
    price = Decimal(f"{rng.randint(1000, 70000)}.{rng.randint(0, 99):02d}")
    qty = Decimal(f"0.{rng.randint(1, 99999999):08d}")
    return Trade(
        exchange=exchange,
        symbol=symbol,
        exchange_symbol=symbol,
        trade_id=str(trade_id),
        exchange_ts=ts,
        received_at=ts,
        price=price,
        quantity=qty,
        quote_quantity=multiply(price, qty),
        side=rng.choice(("BUY", "SELL")),
        source_topic="bench",
        source_partition=0,
        source_offset=0,
    )


async def produce_backlog(bootstrap: str, count: int, syms: list[tuple[str, str]]) -> None:
    rng = random.Random(1)
    start = (time.time_ns() // 1000 // DAY - 7) * DAY
    step = (6 * 3600 * 1_000_000) // count  # six hours of event time
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type=str(PRODUCER_DEFAULTS["compression_type"]),
    )
    await producer.start()
    try:
        futures = []
        for i in range(count):
            exchange, symbol = syms[i % len(syms)]
            t = make_trade(rng, i + 1, start + i * step, exchange, symbol)
            futures.append(await producer.send(TRADES, t.encode(), key=t.key.encode()))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def trades_in(url: str) -> float:
    try:
        return metric_sum(parse_metrics(scrape(url)), "k2_ohlcv_trades_in_total")
    except OSError:
        return -1.0


async def measure_throughput(url: str, total: int) -> dict[str, float]:
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = trades_in(url)
        samples.append((time.monotonic(), n))
        if n >= total:
            break
        await asyncio.sleep(0.25)
    lo = next((t, n) for t, n in samples if n >= total * 0.1)
    hi = samples[-1]
    rate = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 0.0
    return {"trades": total, "processed": hi[1], "seconds_10_to_100pct": hi[0] - lo[0], "trades_per_s": rate}


async def live_phase(
    bootstrap: str, rate: int, seconds: float, syms: list[tuple[str, str]], grace_s: float
) -> dict[str, object]:
    rng = random.Random(2)
    sent: dict[tuple[str, int], list[float]] = {}  # (live_key 1m, window) -> send time of each trade rank
    latencies: list[float] = []
    close_lat: list[float] = []
    done = asyncio.Event()
    live_start_us = time.time_ns() // 1000

    async def consume() -> None:
        consumer = AIOKafkaConsumer(
            OHLCV_LIVE,
            OHLCV,
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="latest",
            # as the services' consumers: a parked read_committed fetch is answered as soon as a
            # commit moves the last stable offset, and 5 ms only added empty fetches to the broker
            fetch_max_wait_ms=50,
            group_id=None,
        )
        await consumer.start()
        seen_rank: dict[tuple[str, int], int] = {}
        try:
            while not done.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                wall = time.time()
                for tp, records in batches.items():
                    for record in records:
                        candle = Candle.decode(record.value)
                        if candle.timeframe != "1m":
                            continue
                        if tp.topic == OHLCV:
                            # only windows of the live phase (the backlog's old windows close here too)
                            if candle.revision == 0 and candle.window_start >= live_start_us:
                                close_lat.append(wall - candle.window_end / 1e6 - grace_s)
                            continue
                        key = (candle.live_key, candle.window_start)
                        times = sent.get(key, [])
                        first = seen_rank.get(key, 0)
                        for rank in range(first, min(candle.trade_count, len(times))):
                            latencies.append(now - times[rank])
                        seen_rank[key] = max(first, min(candle.trade_count, len(times)))
        finally:
            await consumer.stop()

    consumer_task = asyncio.create_task(consume())
    await asyncio.sleep(3)  # the consumer's assignment settles at "latest"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    trade_id = 10_000_000
    started = time.monotonic()
    sent_count = 0
    try:
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while sent_count < due:
                exchange, symbol = syms[sent_count % len(syms)]
                ts = time.time_ns() // 1000
                trade = make_trade(rng, trade_id, ts, exchange, symbol)
                trade_id += 1
                sent.setdefault((trade.key + ":1m", ts - ts % MINUTE), []).append(time.monotonic())
                await producer.send(TRADES, trade.encode(), key=trade.key.encode())
                sent_count += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        # until the last live window has closed (end + grace) and its final candle had time to arrive
        now_us = time.time_ns() // 1000
        await asyncio.sleep((MINUTE - now_us % MINUTE) / 1e6 + grace_s + 3)
    finally:
        await producer.stop()
        done.set()
        await consumer_task
    return {
        "trades_sent": sent_count,
        "rate_per_s": sent_count / seconds,
        "live_latency_s": summarize(latencies),
        "live_samples": len(latencies),
        "close_latency_client_s": summarize(close_lat),
        "closes_seen": len(close_lat),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="k2-bench-ohlcv-"))
    broker = LocalBroker(
        data_dir, port=free_port(), controller_port=free_port(), heap="768m", exit_with_parent=True
    )
    broker.start(wait=True)
    worker: ServiceProcess | None = None
    try:
        await ensure_topics(broker.bootstrap)
        syms = symbols(args.symbols)
        t0 = time.monotonic()
        await produce_backlog(broker.bootstrap, args.trades, syms)
        produce_s = time.monotonic() - t0
        port = free_port()
        env = {
            "K2_DATA_DIR": str(data_dir),
            "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
            "K2_METRICS_PORT": str(port),
            "K2_OHLCV_APP_ID": "k2-ohlcv-bench",
            "K2_OHLCV_GRACE_SECONDS": str(args.grace),
            "K2_LOG_LEVEL": "WARNING",
        }
        url = f"http://127.0.0.1:{port}/metrics"
        worker = ServiceProcess("services.ohlcv", env=env, name="ohlcv-bench").start()
        throughput = await measure_throughput(url, args.trades)
        live = await live_phase(broker.bootstrap, args.rate, args.live_seconds, syms, args.grace)
        metrics = parse_metrics(scrape(url))
        worker_close = {
            k: v
            for k, v in metrics.items()
            if k.startswith("k2_ohlcv_close_latency_seconds") and 'timeframe="1m"' in k
        }
        return {
            "backlog_produce_s": produce_s,
            "symbols": len(syms),
            "grace_s": args.grace,
            "throughput": throughput,
            "live": live,
            "worker_close_latency_1m": worker_close,
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ohlcv")
    parser.add_argument("--trades", type=int, default=300_000, help="backlog size for the throughput run")
    parser.add_argument("--symbols", type=int, default=24)
    parser.add_argument("--rate", type=int, default=1000, help="trades/s of the live phase")
    parser.add_argument("--live-seconds", type=float, default=80.0)
    parser.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    live = result["live"]
    assert isinstance(live, dict)
    rows = [
        {
            "figure": "throughput per worker (trades/s, 6 timeframes)",
            "measured": result["throughput"]["trades_per_s"],
            "target": ">= 20000",
        },  # type: ignore[index]
        {
            "figure": f"live latency p99 (s) at {args.rate}/s",
            "measured": live["live_latency_s"]["p99"],
            "target": "<= 0.300",
        },
        {"figure": "live latency p50 (s)", "measured": live["live_latency_s"]["p50"], "target": "-"},
        {
            "figure": "final 1m candle after window end + grace, max (s)",
            "measured": (live["close_latency_client_s"] or {}).get("max"),
            "target": "<= 1.0",
        },
    ]
    print(format_table(rows))
    path = write_results("ohlcv", {"args": vars(args), **result})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
