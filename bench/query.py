"""Load generator for the query API: `python -m bench.query` (== `task bench:query`).

Builds a temporary lake with the real lake-writer code (4 markets, one day of trades, a full day
of 1m candles each), starts `python -m services.query` as a real uvicorn process on loopback,
then runs 50 concurrent httpx clients per scenario (bounded by a request count and a time limit):

  candles_1m_day   GET /v1/ohlcv/1m, one symbol, one day (1,440 rows), warm    target p95 <= 10 ms
  trades_10k       GET /v1/trades, 10,000 rows (same page, cached)             target p95 <= 100 ms
  trades_10k_cold  GET /v1/trades, 10,000 rows, a different range every time (never cached)
  candles_cached   GET /v1/ohlcv/1h, one symbol, one day (24 rows), cached     target >= 1,000 req/s

plus the same candle query from one client (service time without queueing). Prints a table and
writes bench-results/query.json. Client and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from services.common.catalog import open_catalog
from services.common.metrics import free_port
from services.common.settings import K2Settings
from services.lakewriter.writer import append_trades, ensure_tables, upsert_candles
from tests.query.data import DAY0_US, candles_of, make_trades

DAY = "2024-03-01"
NEXT_DAY = "2024-03-02"


def build_lake(data_dir: Path, trades_per_market: int) -> dict:
    catalog = open_catalog(K2Settings(data_dir=data_dir))
    ensure_tables(catalog)
    trades = make_trades(trades_per_market, span_us=86_400_000_000)
    append_trades(catalog, trades)
    for tf in ("1m", "1h"):
        upsert_candles(catalog, candles_of(trades, tf))
    per_symbol_1m = sum(1 for c in candles_of([t for t in trades if t.symbol == "BTC/USDT"], "1m"))
    return {"trades": len(trades), "btc_usdt_1m_candles": per_symbol_1m}


async def run_load(
    base: str,
    make_request,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    expect_rows: int | None = None,
) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(max_requests))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                if time.monotonic() > deadline:
                    return
                path, params = make_request(i)
                started = time.perf_counter()
                try:
                    response = await client.get(path, params=params)
                except httpx.HTTPError:  # e.g. a keep-alive connection closed under us: count it
                    errors += 1
                    continue
                body = response.content
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1
                elif expect_rows is not None and i == 0:
                    assert json.loads(body)["count"] == expect_rows, body[:200]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


async def scenarios(base: str, concurrency: int, scale: float) -> dict[str, dict]:
    day_1m = ("/v1/ohlcv/1m", {"exchange": "binance", "symbol": "BTC/USDT", "start": DAY, "end": NEXT_DAY})
    hour = ("/v1/ohlcv/1h", {"exchange": "binance", "symbol": "BTC/USDT", "start": DAY, "end": NEXT_DAY})
    trades = (
        "/v1/trades",
        {"exchange": "binance", "symbol": "BTC/USDT", "start": DAY, "end": NEXT_DAY, "limit": 10_000},
    )

    def cold_trades(i: int) -> tuple[str, dict]:
        start_us = DAY0_US + i  # a new range each time: never a cache hit, the real DuckDB path
        return "/v1/trades", {**trades[1], "start": str(start_us)}

    async with httpx.AsyncClient(base_url=base, timeout=60) as warm:  # fill the caches
        for path, params in (day_1m, hour, trades):
            assert (await warm.get(path, params=params)).status_code == 200
    n = lambda count: max(50, int(count * scale))  # noqa: E731
    out = {}
    out["candles_1m_day_single_client"] = await run_load(base, lambda i: day_1m, 1, n(300), 20)
    out["candles_1m_day"] = await run_load(base, lambda i: day_1m, concurrency, n(3000), 30, 1440)
    out["trades_10k"] = await run_load(base, lambda i: trades, concurrency, n(600), 40, 10_000)
    out["trades_10k_cold"] = await run_load(base, cold_trades, concurrency, n(300), 40, 10_000)
    out["candles_cached"] = await run_load(base, lambda i: hour, concurrency, n(10_000), 30, 24)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--trades-per-market", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k2-bench-query-") as tmp:
        data_dir = Path(tmp)
        t0 = time.monotonic()
        lake = build_lake(data_dir, args.trades_per_market)
        print(f"lake built in {time.monotonic() - t0:.1f}s: {lake}", flush=True)
        port = free_port()
        env = {
            **os.environ,
            "K2_DATA_DIR": str(data_dir),
            "K2_QUERY_PORT": str(port),
            "K2_QUERY_RATE_LIMIT_PER_S": "0",
            "K2_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen([sys.executable, "-m", "services.query"], env=env, stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the query server did not become ready")
                time.sleep(0.2)
            results = asyncio.run(scenarios(base, args.concurrency, args.scale))
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
    targets = {
        "candles_1m_day": "p95 <= 10 ms",
        "trades_10k": "p95 <= 100 ms",
        "candles_cached": ">= 1000 req/s",
    }
    print(
        f"\n{'scenario':32} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}  target"
    )
    for name, r in results.items():
        print(
            f"{name:32} {r['requests']:>8} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
            f"{r['errors']:>6}  {targets.get(name, '')}"
        )
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    report = {
        "concurrency": args.concurrency,
        "lake": lake,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "results": results,
        "targets": targets,
    }
    (out / "query.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out / 'query.json'}")


if __name__ == "__main__":
    main()
