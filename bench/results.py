"""`python -m bench.results`: render bench/RESULTS.md from the JSON files in bench-results/.

Every figure in RESULTS.md comes from a file written by a benchmark run, with that run's date and
command, so the README's performance section can be copied from it and re-measured by anyone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, format_table

OUT = Path(__file__).resolve().parent / "RESULTS.md"


def _load(name: str) -> dict[str, Any] | None:
    try:
        return json.loads((RESULTS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _block(text: str) -> str:
    return "```\n" + text + "\n```\n"


def _header(data: dict[str, Any]) -> str:
    return f"Measured {data.get('date')} with `{data.get('command')}`.\n\n"


def platform_section(data: dict[str, Any]) -> str:
    parts = ["## Whole platform (`task bench`)\n\n", _header(data)]
    parts.append(
        f"Start-up {data.get('startup_s')} s, warm-up {data.get('warmup_s')} s, wall {data.get('wall_s')} s, "
        f"{data.get('machine_cores')} cores.\n\n"
    )
    steps = [
        {
            "target/s": s["target_rate"],
            **s["stage_rates"],
            "busy cores": s["cpu_cores_busy"],
            "lag at end": ", ".join(f"{g}={v['end']}" for g, v in s["lag"].items()),
            "bounded": s["bounded"],
        }
        for s in data.get("steps", [])
    ]
    parts.append("Rate steps (stage rates in trades/s measured from each service's counters):\n\n")
    parts.append(_block(format_table(steps)))
    parts.append(f"\nSustained end-to-end: `{json.dumps(data.get('sustained'))}`\n\n")
    if "latency" in data:
        lat = data["latency"]
        rows = [
            {"path": k, **{m: v[m] for m in ("n", "p50", "p95", "p99", "max")}}
            for k, v in lat.items()
            if isinstance(v, dict)
        ]
        parts.append(f"Latency in seconds at {lat.get('at_target_rate')} trades/s:\n\n")
        parts.append(_block(format_table(rows)))
    if "query" in data:
        parts.append("\nQuery load:\n\n" + _block(format_table([data["query"]])))
    if "processes" in data:
        parts.append(
            "\nCPU seconds and peak RSS per process (whole run):\n\n"
            + _block(format_table(data["processes"]))
        )
    if data.get("per_stage_benchmarks"):
        parts.append(
            "\nPer-stage benchmarks found (their own JSON files): "
            + ", ".join(f"`{v['file']}`" for v in data["per_stage_benchmarks"].values())
            + "\n"
        )
    if "peer" in data:
        parts.append("\n" + peer_text(data["peer"]))
    parts.append("\nBeside the original K2:\n\n" + _block(format_table(data.get("comparison", []))))
    return "".join(parts)


def peer_text(peer: dict[str, Any]) -> str:
    rows = [{"engine": "K2 ohlcv (6 timeframes, Decimal, transactions)", **peer.get("k2_ohlcv", {})}]
    if "quix" in peer:
        rows.append({"engine": "Quix Streams 3.28.1 (1m only, float, exactly-once)", **peer["quix"]})
    text = (
        f"Peer on the same {peer.get('trades')} trades of market.crypto.trades, same broker, one after "
        "the other:\n\n"
        + _block(format_table(rows, ["engine", "trades", "rate_trades_per_s", "wall_s_including_startup"]))
    )
    text += f"\nThroughput ratio K2/Quix: {peer.get('throughput_ratio_k2_over_quix')}\n"
    if "candles" in peer:
        c = peer["candles"]
        text += (
            f"\nCandles compared: {c['compared']} (windows both closed); exactly equal: "
            f"{c['candles_exactly_equal']}.\n\n"
            + _block(format_table([{"field": f, **v} for f, v in c["per_field"].items()]))
        )
    if "quix_error" in peer:
        text += f"\nQuix error: `{peer['quix_error'][:300]}`\n"
    return text


def chaos_section(data: dict[str, Any]) -> str:
    checks = data.get("checks", {})
    silver = {k: v for k, v in checks.get("silver", {}).items() if not k.endswith("examples")}
    gold = [
        {"timeframe": tf, **{k: v for k, v in g.items() if not k.endswith("examples")}}
        for tf, g in checks.get("gold", {}).items()
    ]
    return (
        "## Fault injection (`task chaos`)\n\n"
        + _header(data)
        + f"Input: `{json.dumps(data.get('input'))}`\n\n"
        + f"Kills: {data.get('kills_total')} `{json.dumps(data.get('kills'))}`, of which during a lake "
        f"commit: {data.get('kills_during_commit')}; broker restarts: {data.get('broker_restarts')}; "
        f"wall {data.get('wall_s')} s.\n\n"
        + "Silver:\n\n"
        + _block(format_table([silver]))
        + "\nGold vs recomputation from silver (closed windows):\n\n"
        + _block(format_table(gold))
        + f"\nDLQ: `{json.dumps(checks.get('dlq'))}`\n\n"
        + "Consumer-group lags at check time: "
        + f"`{json.dumps(checks.get('lags_at_check', checks.get('lags')))}`; after draining "
        + f"({checks.get('lag_drain_s')} s; None = not within 300 s): `{json.dumps(checks.get('lags'))}`\n\n"
        + f"**Rows checked: {data.get('rows_checked')}; mismatches: {data.get('mismatches')}.**\n"
    )


def simple_section(title: str, data: dict[str, Any], skip: tuple[str, ...] = ("date", "command")) -> str:
    rows = [
        {"measure": k, "value": v}
        for k, v in data.items()
        if k not in skip and isinstance(v, (int, float, str, bool))
    ]
    return f"## {title}\n\n" + _header(data) + _block(format_table(rows))


NOTES = """## Reading these figures (written by hand with the runs of 2026-11-26, session 2)

- The platform, normalizer, ohlcv and chaos runs of 08:18-08:29 UTC had the machine to themselves
  (load average 2-4, which is the benchmark's own broker and processes on 2 cores). The feed,
  lake writer and query figures come from runs at load 3-9 while other suites ran; the soak ran beside
  a CI run. Throughputs from loaded runs are floors, latencies ceilings.
- Since session 2 the normalizer and ohlcv run on the transactional runtime of
  services/common/stream.py instead of faust-streaming (which managed ~40 trades/s in the platform and
  630 trades/s for ohlcv alone). The broker runs with `transaction.partition.verification.enable=false`:
  Kafka 4's KIP-890 verification answered aiokafka's transactional produces with spurious
  NOT_ENOUGH_REPLICAS (aio-libs/aiokafka#1172), each retry stalling a batch.
- "target/s" is the rate asked of the simulator; the stage columns are what each service's counters
  measured. A step is bounded when each group's lag troughs stop rising (the lake writer's lag is a
  sawtooth between its commits). In the quick run every stream stage kept pace at ~5,000 trades/s;
  the lake writer was the first to fall behind.
- Latencies at the first step include a trade's wait for the transaction ahead of it to commit, once
  per stage (normalizer stage 1, stage 2, ohlcv); live candles are further throttled to one update per
  candle per 250 ms.
- The Quix peer keeps window state as JSON (no Decimal), so it computes in float: open/high/low/close
  and counts match K2 exactly; volumes differ in the last float digits (`float_rounding`). Quix also
  closes a window only when a later trade of the same key arrives, so the newest windows are compared
  only where both engines closed them.
- Chaos: kills are seeded; "during a lake commit" counts kills timed to the instant a new data file
  appeared in the warehouse. Its lag verdict uses the consumer groups' committed offsets.
"""


def render() -> str:
    parts = [
        "# Measured figures\n\n",
        "Generated by `python -m bench.results` from `bench-results/*.json`; each section names the "
        "date and the command that reproduces it. The machine: 2 cores, 24 GiB; see the notes at the "
        "end for which runs had it to themselves.\n\n",
    ]
    if (data := _load("platform")) is not None:
        parts.append(platform_section(data) + "\n")
    if (data := _load("chaos")) is not None:
        parts.append(chaos_section(data) + "\n")
    if (data := _load("peer_quix")) is not None:
        parts.append(
            "## Quix Streams peer alone (`python -m bench.peer_quix`)\n\n"
            + _header(data)
            + peer_text({"trades": data["peer"].get("trades"), "quix": data["peer"]})
            + "\nAgainst the reference recomputation:\n\n"
            + _block(
                format_table(
                    [{"field": f, **v} for f, v in data["comparison_with_reference"]["per_field"].items()]
                )
            )
            + "\n"
        )
    if (data := _load("broker")) is not None:
        parts.append(simple_section("Broker start (`task bench:broker`)", data) + "\n")
    if (data := _load("soak")) is not None:
        soak = (
            "## Soak (`task soak -- DURATION`)\n\n"
            + _header(data)
            + "Memory:\n\n"
            + _block(format_table([{"process": n, **v} for n, v in data.get("memory", {}).items()]))
            + "\nLag:\n\n"
            + _block(format_table([{"group": g, **v} for g, v in data.get("lag", {}).items()]))
            + f"\nFlags: {'; '.join(data.get('flags', [])) or 'none'}\n"
        )
        parts.append(soak)
    parts.append(NOTES)
    return "".join(parts)


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
