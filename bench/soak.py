"""`python -m bench.soak DURATION [--rate N]`: the platform at a steady synthetic rate for a long time.

Samples every process's RSS and CPU and every consumer group's lag every 10 s, then flags
- memory growth: the slope of a least-squares line through each process's RSS (after a warm-up
  tenth of the run) above --max-growth-mb-per-h;
- lag that does not return to zero: a group whose lag trends up over the run, or that has not
  drained to ≤ 10 records within 120 s once the input stops at the end.
DURATION: `30m`, `90s`, `2h` or seconds. Writes bench-results/soak.json (with every sample).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import format_table, linear_fit, write_results
from bench.platform import GROUPS, Platform


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def memory_verdicts(
    samples: list[dict[str, Any]], names: list[str], max_mb_per_h: float
) -> dict[str, dict[str, Any]]:
    """Per process: RSS slope (MB/h) after a warm-up tenth of the samples, and whether it is too high."""
    out: dict[str, dict[str, Any]] = {}
    warm = samples[len(samples) // 10 :]
    for name in names:
        points = [
            (s["t"], s["procs"][name]["rss"] / 2**20)
            for s in warm
            if name in s["procs"] and s["procs"][name]["rss"] > 0
        ]
        if len(points) < 3:
            out[name] = {"slope_mb_per_h": None, "flag": False}
            continue
        slope, _ = linear_fit([t for t, _ in points], [m for _, m in points])
        slope_h = slope * 3600
        out[name] = {
            "first_mb": round(points[0][1], 1),
            "last_mb": round(points[-1][1], 1),
            "max_mb": round(max(m for _, m in points), 1),
            "slope_mb_per_h": round(slope_h, 1),
            "flag": slope_h > max_mb_per_h,
        }
    return out


def lag_verdicts(
    samples: list[dict[str, Any]], rate: float, drained: dict[str, int]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    warm = samples[len(samples) // 10 :]
    for group in GROUPS.values():
        points = [(s["t"], float(s["lags"][group])) for s in warm if group in s["lags"]]
        slope = linear_fit([t for t, _ in points], [v for _, v in points])[0] if len(points) >= 3 else 0.0
        final = drained.get(group)
        trend_flag = slope > max(1.0, 0.01 * rate)
        out[group] = {
            "max": max((v for _, v in points), default=None),
            "slope_per_s": round(slope, 2),
            "after_drain": final,
            "flag": trend_flag or final is None or final > 10,
        }
    return out


def run(duration: float, rate: float, interval: float, max_mb_per_h: float) -> dict[str, Any]:
    platform = Platform(sim_rate_per_exchange=rate / 3, sample_interval=interval)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rate": rate,
        "duration_s": duration,
        "interval_s": interval,
        "max_growth_mb_per_h": max_mb_per_h,
    }
    try:
        platform.start()
        platform.set_rate(rate)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(max(0.0, min(interval, duration - elapsed)))
            row = platform.sampler.sample_once()
            procs = {name: value for name, value in row.items() if isinstance(value, dict)}
            lags = platform.lags()
            samples.append({"t": round(time.monotonic() - started, 1), "procs": procs, "lags": lags})
            print(
                f"t={samples[-1]['t']:>7.0f}s lags={lags} rss_mb="
                f"{ {n: round(p['rss'] / 2**20) for n, p in procs.items()} }",
                flush=True,
            )
        platform.set_rate(0)
        deadline = time.monotonic() + 120
        drained: dict[str, int] = {}
        while time.monotonic() < deadline:
            drained = platform.lags()
            if len(drained) == len(GROUPS) and all(v <= 10 for v in drained.values()):
                break
            time.sleep(2)
        names = list(platform.sampler.stats)
        result["memory"] = memory_verdicts(samples, names, max_mb_per_h)
        result["lag"] = lag_verdicts(samples, rate, drained)
        result["processes"] = platform.sampler.table()
        result["samples"] = samples
    finally:
        platform.stop()
    result["flags"] = [f"memory growth: {n}" for n, v in result.get("memory", {}).items() if v["flag"]] + [
        f"lag does not return to zero: {g}" for g, v in result.get("lag", {}).items() if v["flag"]
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("duration", type=parse_duration, help="e.g. 30m, 90s, 2h")
    parser.add_argument("--rate", type=float, default=1000.0, help="total synthetic trades per second")
    parser.add_argument("--interval", type=float, default=10.0, help="sampling interval (s)")
    parser.add_argument(
        "--max-growth-mb-per-h",
        type=float,
        default=50.0,
        help="flag a process whose RSS trend grows faster than this",
    )
    args = parser.parse_args(argv)
    result = run(args.duration, args.rate, args.interval, args.max_growth_mb_per_h)
    result["command"] = f"python -m bench.soak {args.duration:g} --rate {args.rate:g}"
    print("\n== memory\n" + format_table([{"process": n, **v} for n, v in result.get("memory", {}).items()]))
    print("\n== lag\n" + format_table([{"group": g, **v} for g, v in result.get("lag", {}).items()]))
    print("\n== processes\n" + format_table(result.get("processes", [])))
    print("\nflags: " + ("; ".join(result["flags"]) or "none"))
    print(f"written to {write_results('soak', result)}")
    return 1 if result["flags"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
