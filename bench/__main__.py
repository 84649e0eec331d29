"""`python -m bench [--quick]`: the whole platform against the simulator's synthetic market.

Steps the simulator's trade rate up and keeps the highest rate at which every consumer group's lag
stays bounded for the step (60 s; 20 s with --quick); measures per-stage rates from the services'
metrics, end-to-end latencies with a probe (bench/probe.py) during the first step, CPU seconds and
peak RSS per process from /proc, a query load; then, with the feed stopped, times K2's ohlcv and
the Quix Streams peer over the same trades (each from the beginning of market.crypto.trades in a
fresh consumer group) and compares their 1 m candles. Writes bench-results/platform.json and
prints a table, with the original K2's published figures normalised per core beside ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import (
    ORIGINAL_K2,
    RESULTS_DIR,
    format_table,
    percentile,
    write_results,
)
from bench.platform import GROUPS, Platform
from bench.probe import LatencyProbe

STAGE_COUNTERS = {  # stage → (role, metric, label filter)
    "feed → raw": ("feed", "k2_feed_trades_total", ""),
    "normalizer": ("normalizer", "k2_normalizer_trades_out_total", ""),
    "ohlcv": ("ohlcv", "k2_ohlcv_trades_in_total", ""),
    "lakewriter (silver rows)": ("lakewriter", "k2_lakewriter_rows_total", 'table="silver_trades"'),
}
CPU_COUNT = os.cpu_count() or 1


def stage_counts(platform: Platform) -> dict[str, float]:
    out: dict[str, float] = {}
    cache: dict[str, dict[str, float]] = {}
    for stage, (role, metric, label) in STAGE_COUNTERS.items():
        if role not in platform.roles:
            continue
        metrics = cache.setdefault(role, platform.metrics(role))
        out[stage] = sum(
            v for k, v in metrics.items() if (k == metric or k.startswith(metric + "{")) and label in k
        )
    return out


def run_step(platform: Platform, rate: float, seconds: float, interval: float = 2.0) -> dict[str, Any]:
    """Hold one synthetic rate for `seconds`; sample lags and stage counters every `interval`."""
    platform.set_rate(rate)
    started = time.monotonic()
    cpu0 = sum(s.cpu_s for s in platform.sampler.stats.values())
    first = stage_counts(platform)
    lag_series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(max(0.0, min(interval, seconds - elapsed)))
        lags = platform.lags()
        t = time.monotonic() - started
        for group in GROUPS.values():
            if group in lags:
                lag_series[group].append((t, lags[group]))
    wall = time.monotonic() - started
    last = stage_counts(platform)
    platform.sampler.sample_once()
    cpu1 = sum(s.cpu_s for s in platform.sampler.stats.values())
    rates = {stage: round((last.get(stage, 0) - first.get(stage, 0)) / wall, 1) for stage in last}
    verdicts = {group: lag_verdict(series, rate) for group, series in lag_series.items()}
    return {
        "target_rate": rate,
        "seconds": round(wall, 1),
        "stage_rates": rates,
        "lag": verdicts,
        "bounded": bool(verdicts)
        and all(v["bounded"] for v in verdicts.values())
        and len(verdicts) == len(GROUPS),
        "cpu_cores_busy": round((cpu1 - cpu0) / wall, 2),
    }


def lag_verdict(series: list[tuple[float, int]], rate: float) -> dict[str, Any]:
    """Bounded = the lag's troughs do not rise: the lowest lag of the step's second half is below ~12 s
    of input and above the first half's lowest by less than 5 % of the input rate per second.

    Troughs, not the end value or a fitted slope: the lake writer's lag is a sawtooth (it grows until
    each commit, every few seconds, then drops), so its last sample or a line through a short window
    says more about where the teeth fall than about a growing backlog; a backlog raises every trough.
    """
    bound = max(5000.0, rate * 12)
    allowed = max(50.0, 0.05 * rate)
    half = len(series) // 2
    head, tail = series[:half], series[half:]
    end = series[-1][1] if series else None
    growth = None
    bounded = False
    if head and tail:
        head_min, tail_min = min(v for _, v in head), min(v for _, v in tail)
        span = max(1e-9, (tail[-1][0] + tail[0][0]) / 2 - (head[-1][0] + head[0][0]) / 2)
        growth = (tail_min - head_min) / span
        bounded = tail_min <= bound and growth <= allowed
    return {
        "end": end,
        "max": max((v for _, v in series), default=None),
        "trough_growth_per_s": None if growth is None else round(growth, 1),
        "bound": bound,
        "bounded": bounded,
    }


def wait_drained(platform: Platform, timeout: float, rate: float = 0.0) -> bool:
    """Until every group's lag is down to what a running input of `rate` trades/s leaves in flight:
    ~2 s of it for the stream services, ~15 s for the lake writer (it commits every few seconds and
    also reads the raw frames); 10 records when the input has stopped."""
    allowed = {group: 10 + rate * (15 if name == "lakewriter" else 2) for name, group in GROUPS.items()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lags = platform.lags()
        if len(lags) == len(GROUPS) and all(v <= allowed[g] for g, v in lags.items()):
            return True
        time.sleep(1.0)
    return False


def warm_up(platform: Platform, timeout: float, rate: float) -> float | None:
    """Until trades flow through normalizer and ohlcv and the lag from start-up has drained."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        counts = stage_counts(platform)
        if counts.get("normalizer", 0) > 0 and counts.get("ohlcv", 0) > 0:
            break
        time.sleep(1)
    else:
        return None
    if not wait_drained(platform, max(5.0, deadline - time.monotonic()), rate):
        return None
    return round(time.monotonic() - started, 1)


def query_load(platform: Platform, seconds: float = 5.0, clients: int = 8) -> dict[str, Any]:
    """A short load on GET /v1/ohlcv/1m (one symbol, the last hour): requests/s and latency."""
    import httpx

    url = f"http://127.0.0.1:{platform.query_port}/v1/ohlcv/1m"
    params = {"exchange": "binance", "symbol": "BTC/USDT"}
    latencies: list[float] = []
    statuses: dict[int, int] = defaultdict(int)

    async def client(session: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                response = await session.get(url, params=params)
                statuses[response.status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1
            latencies.append(time.perf_counter() - t0)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=10) as session:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(client(session, deadline) for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - started
    ok = statuses.get(200, 0)
    return {
        "endpoint": "GET /v1/ohlcv/1m (binance BTC/USDT)",
        "clients": clients,
        "requests_per_s": round(len(latencies) / wall, 1),
        "ok": ok,
        "statuses": dict(statuses),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000, 2),
        "p95_ms": round((percentile(latencies, 95) or 0) * 1000, 2),
    }


async def k2_final_candles(bootstrap: str) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    from bench.topics import read_all
    from services.common.topics import OHLCV

    out: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for record in await read_all(bootstrap, OHLCV):
        data = json.loads(record.value)
        if data.get("timeframe") != "1m":
            continue
        key = (data["exchange"], data["symbol"], "1m", int(data["window_start"]))
        if key not in out or int(data["revision"]) >= int(out[key]["revision"]):
            out[key] = data
    return out


def time_k2_ohlcv(platform: Platform, total: float, timeout: float) -> dict[str, Any]:
    """A fresh K2 ohlcv worker (own app id = consumer group) over market.crypto.trades from the start."""
    role = platform.add_role(
        "ohlcv#replay",
        env={"K2_OHLCV_APP_ID": f"bench-ohlcv-{int(time.time())}"},
    )
    role.proc.wait_http(role.metrics_url, 120)
    started = time.time()
    points: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = platform.counter("ohlcv#replay", "k2_ohlcv_trades_in_total")
        points.append((n, time.time()))
        if n >= total:
            break
        time.sleep(0.5)
    platform.sampler.sample_once()
    role.proc.stop()
    moving = [p for p in points if p[0] > 0]
    rate = (
        (moving[-1][0] - moving[0][0]) / (moving[-1][1] - moving[0][1])
        if len(moving) >= 2 and moving[-1][1] > moving[0][1]
        else None
    )
    return {
        "trades": int(points[-1][0]) if points else 0,
        "rate_trades_per_s": rate,
        "wall_s_including_startup": round(time.time() - started, 2),
        "timeframes": 6,
        "guarantee": "exactly-once (Kafka transactions)",
        "numbers": "Decimal",
    }


def peer_comparison(platform: Platform, timeout: float, cap: int) -> dict[str, Any]:
    """K2's ohlcv and the Quix peer, one after the other, each alone on the machine but for the broker,
    over the first `cap` trades of market.crypto.trades (all of them when fewer)."""
    from bench.peer_quix import read_peer_candles, run_peer
    from bench.reference import compare_with_float_peer
    from bench.topics import count_records
    from services.common.topics import TRADES

    for name in ("simulator", "feed", "lakewriter", "query", "normalizer", "ohlcv"):
        if name in platform.roles:
            platform.roles[name].proc.stop()
    on_topic = asyncio.run(count_records(platform.bootstrap, TRADES))
    total = min(on_topic, cap)
    ours = asyncio.run(k2_final_candles(platform.bootstrap))
    result: dict[str, Any] = {"trades_on_topic": on_topic, "trades": int(total)}
    result["k2_ohlcv"] = time_k2_ohlcv(platform, total, timeout)
    try:
        result["quix"] = run_peer(
            platform.bootstrap, platform.data_dir, int(total), platform.sampler, timeout=timeout
        )
        peer = asyncio.run(read_peer_candles(platform.bootstrap))
        result["candles"] = compare_with_float_peer(
            {
                k: {
                    n: Decimal(str(v[n])) if n != "trade_count" else v[n]
                    for n in ("open", "high", "low", "close", "volume", "trade_count")
                }
                for k, v in ours.items()
            },
            peer,
        )
    except (Exception, asyncio.CancelledError) as exc:  # the peer must not take the report down
        result["quix_error"] = repr(exc)[:2000]
    k2_rate = result["k2_ohlcv"].get("rate_trades_per_s")
    quix_rate = result.get("quix", {}).get("rate_trades_per_s")
    result["throughput_ratio_k2_over_quix"] = round(k2_rate / quix_rate, 2) if k2_rate and quix_rate else None
    return result


def per_core(rate: float | None, cores: float) -> float | None:
    return round(rate / cores, 1) if rate and cores else None


def run(quick: bool, steps: list[float] | None, step_s: float | None, peer: bool) -> dict[str, Any]:
    steps = steps or ([600.0, 3000.0] if quick else [300.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
    step_s = step_s or (20.0 if quick else 60.0)
    started = time.monotonic()
    platform = Platform(sim_rate_per_exchange=steps[0] / 3)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ("K2_BENCH_ELR=0 " if os.environ.get("K2_BENCH_ELR") == "0" else "")
        + "python -m bench"
        + (" --quick" if quick else ""),
        "machine_cores": CPU_COUNT,
        "steps": [],
    }
    try:
        platform.start()
        result["startup_s"] = round(time.monotonic() - started, 1)
        result["warmup_s"] = warm_up(platform, timeout=120 if quick else 300, rate=steps[0])
        probe = LatencyProbe(platform.bootstrap, platform.catalog).start()
        for index, rate in enumerate(steps):
            step = run_step(platform, rate, step_s)
            if index == 0:
                probe.stop()
                result["latency"] = {"at_target_rate": rate, **probe.results()}
            result["steps"].append(step)
            print(
                f"step {rate:>8.0f}/s: stage rates {step['stage_rates']} lag "
                f"{ {g: v['end'] for g, v in step['lag'].items()} } bounded={step['bounded']}",
                flush=True,
            )
            if not step["bounded"] and not quick:
                break
        bounded = [s for s in result["steps"] if s["bounded"]]
        best = max(bounded, key=lambda s: s["stage_rates"].get("normalizer", 0), default=None)
        result["sustained"] = {
            "trades_per_s": best["stage_rates"].get("normalizer") if best else None,
            "target_rate": best["target_rate"] if best else None,
            "cpu_cores_busy": best["cpu_cores_busy"] if best else None,
            "step_seconds": step_s,
            "note": "highest step whose every consumer group's lag stayed bounded"
            if best
            else "no step stayed bounded",
        }
        top = result["steps"][-1]
        result["per_stage_at_highest_step"] = {"target_rate": top["target_rate"], **top["stage_rates"]}
        try:
            result["query"] = query_load(platform)
        except Exception as exc:
            result["query"] = {"error": repr(exc)}
        platform.set_rate(0)
        result["drained"] = wait_drained(platform, 60 if quick else 300)
        result["per_stage_benchmarks"] = read_stage_benchmarks()
        if peer:
            result["peer"] = peer_comparison(
                platform, timeout=90 if quick else 600, cap=100_000 if quick else 500_000
            )
        result["processes"] = platform.sampler.table()
    finally:
        platform.stop()
    result["wall_s"] = round(time.monotonic() - started, 1)
    add_comparison(result)
    return result


def read_stage_benchmarks() -> dict[str, Any]:
    """Figures of the per-stage benchmarks (`python -m bench.<stage>`, owned by each service), when
    their bench-results/<stage>.json exists: the scalar fields of the file and of its first-level
    sections, so the platform report shows them beside the in-platform rates."""
    out: dict[str, Any] = {}
    for stage in ("feed", "normalizer", "ohlcv", "lakewriter", "query"):
        path = RESULTS_DIR / f"{stage}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        flat: dict[str, Any] = {"file": str(path.relative_to(RESULTS_DIR.parent))}
        for key, value in data.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                flat[key] = value
            elif isinstance(value, dict):
                flat.update(
                    {f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float, str, bool))}
                )
        out[stage] = flat
    return out


def add_comparison(result: dict[str, Any]) -> None:
    sustained = (result.get("sustained") or {}).get("trades_per_s")
    busy = (result.get("sustained") or {}).get("cpu_cores_busy")
    rows = [
        {
            "design": d["design"],
            "trades_per_s": d["trades_per_s"],
            "cores": d["cores_text"],
            "trades_per_s_per_core": per_core(d["trades_per_s"], d["cores"]),
        }
        for d in ORIGINAL_K2
    ]
    rows.append(
        {
            "design": f"K2 (this run, {CPU_COUNT}-core machine)",
            "trades_per_s": sustained,
            "cores": str(CPU_COUNT),
            "trades_per_s_per_core": per_core(sustained, CPU_COUNT),
        }
    )
    if busy:
        rows.append(
            {
                "design": "K2 (this run, per busy core: CPU-s/s of all processes)",
                "trades_per_s": sustained,
                "cores": f"{busy:.2f}",
                "trades_per_s_per_core": per_core(sustained, busy),
            }
        )
    result["comparison"] = rows


def print_report(result: dict[str, Any]) -> None:
    print("\n== steps")
    print(
        format_table(
            [
                {
                    "target/s": s["target_rate"],
                    **s["stage_rates"],
                    "busy cores": s["cpu_cores_busy"],
                    "bounded": s["bounded"],
                }
                for s in result.get("steps", [])
            ]
        )
    )
    if "latency" in result:
        print(f"\n== latency (s) at {result['latency']['at_target_rate']:.0f} trades/s")
        print(format_table([{"path": k, **v} for k, v in result["latency"].items() if isinstance(v, dict)]))
    if "query" in result:
        print("\n== query\n" + format_table([result["query"]]))
    if "processes" in result:
        print("\n== processes\n" + format_table(result["processes"]))
    if "peer" in result:
        peer = result["peer"]
        rows = [{"engine": "K2 ohlcv (6 timeframes, Decimal)", **peer.get("k2_ohlcv", {})}]
        if "quix" in peer:
            rows.append({"engine": "Quix Streams (1m, float)", **peer["quix"]})
        print(
            "\n== peer (same trades, same broker)\n"
            + format_table(rows, ["engine", "trades", "rate_trades_per_s", "wall_s_including_startup"])
        )
        print(f"throughput ratio K2/Quix: {peer.get('throughput_ratio_k2_over_quix')}")
        if "candles" in peer:
            c = peer["candles"]
            print(
                f"candles compared {c['compared']}, exactly equal {c['candles_exactly_equal']}; per field: "
                + ", ".join(
                    f"{f}: {v['exact']} exact/{v['float_rounding']} float-rounding/{v['mismatch']} mismatch"
                    for f, v in c["per_field"].items()
                )
            )
        if "quix_error" in peer:
            print(f"quix error: {peer['quix_error'][:500]}")
    print("\n== sustained end-to-end: " + json.dumps(result.get("sustained")))
    print("\n== beside the original K2\n" + format_table(result.get("comparison", [])))
    print(f"\nwall time {result.get('wall_s')} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short steps (finishes in < 3 min)")
    parser.add_argument(
        "--steps",
        type=lambda s: [float(x) for x in s.split(",")],
        help="comma-separated total trade rates to step through",
    )
    parser.add_argument("--step-seconds", type=float)
    parser.add_argument("--no-peer", action="store_true", help="skip the K2-vs-Quix comparison")
    args = parser.parse_args(argv)
    result = run(args.quick, args.steps, args.step_seconds, not args.no_peer)
    print_report(result)
    path = write_results("platform", result)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    raise SystemExit(main())
