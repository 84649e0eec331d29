"""Load generator for the query API: `python -m bench.query` (== `task bench:query`).

Builds a temporary lake with the real lake-writer code (4 markets, one day of trades, a full day
of 1m candles each), starts `python -m services.query` as a real uvicorn process on loopback
(`--processes` worker processes), then runs each scenario from a separate load-generator process
(bench.query_client: `--concurrency` keep-alive clients, closed loop, bounded by a request count
and a time limit):

  candles_1m_day   GET /v1/ohlcv/1m, one symbol, one day (1,440 rows), warm    target p95 <= 10 ms
  trades_10k       GET /v1/trades, 10,000 rows (same page, cached)             target p95 <= 100 ms
  trades_10k_cold  GET /v1/trades, 10,000 rows, a different range every time (never cached: DuckDB)
  candles_cached   GET /v1/ohlcv/1h, one symbol, one day (24 rows), cached     target >= 1,000 req/s

plus the same queries from one client (service time without queueing). Clients offer gzip
(Accept-Encoding: gzip, as browsers, requests and httpx do): cached answers go out precompressed
(services/query/hotpath.py) and latency is to the last byte as sent. The `_identity` scenarios repeat
the two latency targets for a client that offers no compression (the whole JSON on the wire). Client and
server share this machine's cores: the table shows the CPU seconds each used. Prints a table and
writes bench-results/query.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bench.query_client import Load, run_load
from bench.query_data import DAY0_US, candles_of, make_trades
from services.common.catalog import open_catalog
from services.common.metrics import free_port
from services.common.settings import K2Settings
from services.lakewriter.writer import append_trades, ensure_tables, upsert_candles

DAY = "2024-03-01"
NEXT_DAY = "2024-03-02"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def build_lake(data_dir: Path, trades_per_market: int) -> dict:
    catalog = open_catalog(K2Settings(data_dir=data_dir))
    ensure_tables(catalog)
    trades = make_trades(trades_per_market, span_us=86_400_000_000)
    append_trades(catalog, trades)
    for tf in ("1m", "1h"):
        upsert_candles(catalog, candles_of(trades, tf))
    per_symbol_1m = sum(1 for c in candles_of([t for t in trades if t.symbol == "BTC/USDT"], "1m"))
    return {"trades": len(trades), "btc_usdt_1m_candles": per_symbol_1m}


def _tree(pid: int) -> list[int]:
    """pid and its descendants (the uvicorn supervisor and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process tree (from /proc)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def scenarios(port: int, server_pid: int, concurrency: int, scale: float) -> dict[str, dict]:
    common = {"exchange": "binance", "symbol": "BTC/USDT", "start": DAY, "end": NEXT_DAY}
    day_1m = f"/v1/ohlcv/1m?{urlencode(common)}"
    hour = f"/v1/ohlcv/1h?{urlencode(common)}"
    trades = f"/v1/trades?{urlencode({**common, 'limit': 10_000})}"
    # A new range each time: never a cache hit, the real DuckDB path.
    cold = [f"/v1/trades?{urlencode({**common, 'limit': 10_000, 'start': DAY0_US + i})}" for i in range(5000)]

    # Fill the caches of every worker process: a new connection each time lands on any worker.
    for target in (day_1m, hour, trades):
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}{target}", timeout=60).status_code == 200
    n = lambda count: max(50, int(count * scale))  # noqa: E731
    plan = {
        "candles_1m_day_single_client": ([day_1m], 1, n(1000), 10, 1440, True),
        "candles_1m_day": ([day_1m], concurrency, n(60_000), 20, 1440, True),
        "candles_1m_day_identity": ([day_1m], concurrency, n(20_000), 20, 1440, False),
        "trades_10k_single_client": ([trades], 1, n(300), 10, 10_000, True),
        "trades_10k": ([trades], concurrency, n(5000), 20, 10_000, True),
        "trades_10k_identity": ([trades], concurrency, n(5000), 20, 10_000, False),
        "trades_10k_cold_single_client": (cold[-500:], 1, n(100), 10, 10_000, True),
        "trades_10k_cold": (cold, concurrency, n(300), 20, 10_000, True),
        "candles_cached": ([hour], concurrency, n(50_000), 20, 24, True),
    }
    out = {}
    for name, (targets, clients, count, seconds, rows, accept_gzip) in plan.items():
        cpu0 = cpu_seconds(server_pid)
        result = run_load(Load("127.0.0.1", port, targets, clients, count, seconds, rows, accept_gzip))
        result["server_cpu_s"] = round(cpu_seconds(server_pid) - cpu0, 2)
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        out[name] = result
        print(f"{name}: {result}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--trades-per-market", type=int, default=20_000)
    parser.add_argument(
        "--processes", type=int, default=2, help="server worker processes (K2_QUERY_PROCESSES, default 2)"
    )
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
            "K2_QUERY_PROCESSES": str(args.processes),
            "K2_QUERY_RATE_LIMIT_PER_S": "0",
            "K2_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen([sys.executable, "-m", "services.query"], env=env, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the query server did not become ready")
                time.sleep(0.2)
            results = scenarios(port, server.pid, args.concurrency, args.scale)
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
        f"\n{'scenario':30} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'MB/s':>6} {'srv cpu':>7} {'cli cpu':>7} {'errors':>6}  target"
    )
    for name, r in results.items():
        print(
            f"{name:30} {r['requests']:>8} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
            f"{r['mb_per_s']:>6} {r['server_cpu_s']:>7} {r['client_cpu_s']:>7} {r['errors']:>6}  "
            f"{targets.get(name, '')}"
        )
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concurrency": args.concurrency,
        "server_processes": args.processes,
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
