"""`python -m bench.chaos`: a capture through the platform while processes are killed, then exactness checks.

1. A seeded synthetic capture (bench/synthetic.py; every trade known) is replayed by the real feed
   (`python -m services.feed replay FILE --speed X`) into a throwaway broker, through the normalizer,
   ohlcv, lake writer (and the query service, killed too); a handful of bad frames, each with the
   dead-letter reason it must produce, is written once to a raw topic mid-run.
2. Kills: kill -9 of a random service at random moments (seeded), restarted after a random pause —
   at least 30 in all; some lake-writer kills are timed to the instant a new data file appears in
   the warehouse (the commit path: Parquet written, catalog commit pending or just done); a feed
   kill restarts the replay from the first frame (duplicates that the normalizer must drop). The
   broker is restarted once.
3. Checks, once every consumer group has caught up: silver holds exactly the expected trades (none
   lost, none twice, every value equal); every gold table equals a recomputation from silver
   (bench/reference.py); silver_dlq holds exactly the injected bad input; no group lags.
Prints kills, restarts, rows checked and mismatches (0 when the platform is exact). Exit code 1 on
any mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import format_table, write_results
from bench.platform import GROUPS, Platform
from bench.reference import RefTrade, compare_exact, recompute_candles
from bench.synthetic import Frame, SyntheticMarket, trades_of, write_capture
from services.common.schemas import TIMEFRAMES

CLOSE_MARGIN_US = 30_000_000
KILLABLE = ("normalizer", "ohlcv", "lakewriter", "feed", "query")
WEIGHTS = (3, 3, 4, 1, 1)


class DataFileWatch:
    """Notices new Parquet data files under the warehouse (polling every 20 ms)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[str] = set()
        self.new = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan(self) -> set[str]:
        found: set[str] = set()
        for dirpath, _dirs, files in os.walk(self.root):
            if os.sep + "data" in dirpath:
                found.update(os.path.join(dirpath, f) for f in files if f.endswith(".parquet"))
        return found

    def _run(self) -> None:
        self.seen = self._scan()
        while not self._stop.wait(0.02):
            current = self._scan()
            if current - self.seen:
                self.new.set()
            self.seen = current

    def start(self) -> DataFileWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def make_capture(path: Path, seed: int, minutes: float, rate: float) -> tuple[list[Frame], list[Frame]]:
    """Good frames (to the capture) and bad frames (injected once); event time ends a minute ago."""
    market = SyntheticMarket(seed=seed)
    start_us = int((time.time() - 60 - minutes * 60) * 1_000_000)
    good = list(market.frames(start_us, minutes * 60, rate))
    write_capture(path, good)
    bad = market.bad_frames(int(time.time() * 1_000_000) - 30_000_000)
    return good, bad


async def inject(bootstrap: str, frames: list[Frame]) -> None:
    from aiokafka import AIOKafkaProducer

    from services.common.kafka import PRODUCER_DEFAULTS
    from services.common.raw import RawHeaders
    from services.common.topics import RAW_TOPICS

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    await producer.start()
    try:
        for seq, frame in enumerate(frames, start=1):
            headers = RawHeaders(frame.received_at_ns, "bench-chaos-bad", seq).to_kafka()
            await producer.send_and_wait(
                RAW_TOPICS[frame.exchange], frame.text.encode(), key=b"bench-chaos-bad", headers=headers
            )
    finally:
        await producer.stop()


def chaos(
    platform: Platform,
    rng: random.Random,
    kills: int,
    duration: float,
    watch: DataFileWatch,
    bad: list[Frame],
    log: list[dict[str, Any]],
) -> None:
    """The kill loop: `kills` kill -9 spread over `duration` s, the broker restarted once midway,
    the bad frames injected once a third of the way."""
    import asyncio

    started = time.monotonic()
    gap = duration / kills
    broker_at = kills // 2
    inject_at = kills // 3
    for index in range(kills):
        time.sleep(rng.uniform(0.3, 1.7) * gap)
        if index == inject_at:
            asyncio.run(inject(platform.bootstrap, bad))
            log.append(
                {"t": round(time.monotonic() - started, 1), "event": f"injected {len(bad)} bad frames"}
            )
        if index == broker_at:
            took = platform.restart_broker()
            log.append(
                {"t": round(time.monotonic() - started, 1), "event": f"broker restarted ({took:.1f}s)"}
            )
        name = rng.choices(KILLABLE, WEIGHTS)[0]
        during_commit = False
        if name == "lakewriter" and rng.random() < 0.6:
            watch.new.clear()
            during_commit = watch.new.wait(15)
        if not platform.roles[name].proc.running:
            platform.restart(name)
            time.sleep(0.5)
        platform.kill(name)
        log.append(
            {
                "t": round(time.monotonic() - started, 1),
                "event": f"kill -9 {name}"
                + (" (new data file just written: commit in flight)" if during_commit else ""),
            }
        )
        time.sleep(rng.uniform(0.2, 2.5))
        platform.restart(name)


def wait_quiet(platform: Platform, expected_rows: int, timeout: float) -> dict[str, Any]:
    """Until the replay has finished, every group lags ≤ 10 records and silver stops growing."""
    deadline = time.monotonic() + timeout
    feed = platform.roles["feed"].proc
    last_count, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if not feed.running and feed.proc is not None and feed.proc.returncode not in (0, None):
            feed.start()  # a killed replay is finished by starting it again
        for name in ("normalizer", "ohlcv", "lakewriter"):
            if not platform.roles[name].proc.running:
                platform.restart(name)
        lags = platform.lags()
        count = silver_count(platform)
        if count != last_count:
            last_count, stable_since = count, time.monotonic()
        quiet = not feed.running and len(lags) == len(GROUPS) and all(v <= 10 for v in lags.values())
        stable_for = time.monotonic() - stable_since
        if quiet and ((count >= expected_rows and stable_for > 15) or stable_for > 60):
            return {"lags": lags, "silver_rows": count}
        if not feed.running and stable_for > 120:  # nothing moves any more: check what is there
            return {"lags": lags, "silver_rows": count, "stalled": True}
        time.sleep(2)
    return {"lags": platform.lags(), "silver_rows": silver_count(platform), "timed_out": True}


def drain_lags(platform: Platform, timeout: float) -> tuple[dict[str, int], float | None]:
    """A group that lags at check time may still be catching up after its last restart (a stream
    worker recovers its changelog state first): poll until every group is at ≤ 10 records or `timeout` s
    pass. What is left then *stays* lagging. Returns the final lags and how long draining took (None:
    it did not)."""
    started = time.monotonic()
    while True:
        for name in ("normalizer", "ohlcv", "lakewriter"):
            if not platform.roles[name].proc.running:
                platform.restart(name)
        lags = platform.lags()
        if len(lags) == len(GROUPS) and all(v <= 10 for v in lags.values()):
            return lags, round(time.monotonic() - started, 1)
        if time.monotonic() - started > timeout:
            return lags, None
        time.sleep(2)


def silver_count(platform: Platform) -> int:
    try:
        table = platform.catalog().load_table("market.silver_trades")
        snapshot = table.current_snapshot()
        return int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0
    except Exception:
        return -1


def read_table(platform: Platform, name: str) -> list[dict[str, Any]]:
    import pyarrow as pa

    table = platform.catalog().load_table(f"market.{name}")
    arrow = table.scan().to_arrow()
    columns = {}
    for column in arrow.column_names:
        col = arrow[column]
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        columns[column] = col.to_pylist()
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def check(
    platform: Platform, expected: dict[tuple[str, str, str], RefTrade], bad: list[Frame]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # silver: exactly the expected trades
    silver = read_table(platform, "silver_trades")
    keys = Counter((r["exchange"], r["symbol"], r["trade_id"]) for r in silver)
    duplicates = sum(n - 1 for n in keys.values() if n > 1)
    missing = [k for k in expected if k not in keys]
    extra = [k for k in keys if k not in expected]
    value_mismatches = 0
    examples = []
    for row in silver:
        want = expected.get((row["exchange"], row["symbol"], row["trade_id"]))
        if want is None:
            continue
        got = (row["exchange_ts"], Decimal(row["price"]), Decimal(row["quantity"]), row["side"])
        if got != (want.exchange_ts, want.price, want.quantity, want.side):
            value_mismatches += 1
            if len(examples) < 5:
                examples.append(
                    {
                        "key": [row["exchange"], row["symbol"], row["trade_id"]],
                        "silver": str(got),
                        "expected": str((want.exchange_ts, want.price, want.quantity, want.side)),
                    }
                )
    out["silver"] = {
        "rows": len(silver),
        "expected": len(expected),
        "missing": len(missing),
        "extra": len(extra),
        "duplicates": duplicates,
        "value_mismatches": value_mismatches,
        "missing_examples": [list(k) for k in missing[:5]],
        "value_examples": examples,
    }
    # gold: every timeframe equals a recomputation from silver
    silver_trades = [
        RefTrade(
            r["exchange"],
            r["symbol"],
            r["trade_id"],
            r["exchange_ts"],
            Decimal(r["price"]),
            Decimal(r["quantity"]),
            r["side"],
            Decimal(r["quote_quantity"]),
        )
        for r in silver
    ]
    reference = recompute_candles(silver_trades)
    gold: dict[str, Any] = {}
    # Only closed windows are final: window end + grace (10 s) + idle timeout (2 s) before now, with margin.
    closed_before = int(time.time() * 1_000_000) - CLOSE_MARGIN_US
    for timeframe in TIMEFRAMES:
        length = TIMEFRAMES[timeframe]
        want = {k: v for k, v in reference.items() if k[2] == timeframe and k[3] + length <= closed_before}
        still_open = sum(1 for k in reference if k[2] == timeframe) - len(want)
        try:
            rows = read_table(platform, f"gold_ohlcv_{timeframe}")
        except Exception as exc:
            gold[timeframe] = {"error": repr(exc)[:300], "expected": len(want), "open_windows": still_open}
            continue
        latest: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        visible_rows = len(rows)
        for row in rows:
            key = (row["exchange"], row["symbol"], timeframe, row["window_start"])
            if key not in latest or row["revision"] > latest[key]["revision"]:
                latest[key] = row
        # Every closed window must be in gold; a window of the last seconds may or may not be closed yet
        # (idle timeout): when its candle is in gold it is final and must equal the recomputation too.
        want.update({k: v for k, v in reference.items() if k in latest})
        result = compare_exact(want, latest)
        result["open_windows"] = still_open
        result["rows_visible"] = visible_rows
        result["rows_beyond_one_per_candle"] = visible_rows - len(latest)
        gold[timeframe] = result
    out["gold"] = gold
    # dead letters: exactly the injected bad input
    try:
        dlq = read_table(platform, "silver_dlq")
    except Exception:
        dlq = []
    want_reasons = Counter(reason for frame in bad for reason in frame.bad_reasons)
    got_reasons = Counter(r["reason"] for r in dlq)
    out["dlq"] = {
        "expected": dict(want_reasons),
        "actual": dict(got_reasons),
        "difference": sum(((want_reasons - got_reasons) + (got_reasons - want_reasons)).values()),
    }
    out["lags"] = platform.lags()
    # the lake writer's own view of its lag (records behind the last stable offset, per partition)
    out["lakewriter_lag_metric"] = platform.counter("lakewriter", "k2_lakewriter_lag_records")
    return out


def count_mismatches(checks: dict[str, Any]) -> int:
    silver = checks["silver"]
    total = silver["missing"] + silver["extra"] + silver["duplicates"] + silver["value_mismatches"]
    for result in checks["gold"].values():
        if "error" in result:
            total += result.get("expected", 1)  # a table that should hold candles is missing
        else:
            total += (
                result["missing"]
                + result["extra"]
                + result["field_mismatches"]
                + result["rows_beyond_one_per_candle"]
            )
    total += checks["dlq"]["difference"]
    total += sum(1 for v in checks["lags"].values() if v > 10) + (len(GROUPS) - len(checks["lags"]))
    return total


def run(
    seed: int, kills: int, duration: float, minutes: float, rate: float, speed: float, keep: bool = False
) -> dict[str, Any]:
    rng = random.Random(seed)
    platform = Platform(services=("normalizer", "ohlcv", "lakewriter", "query"), keep_data=keep)
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python -m bench.chaos --seed {seed} --kills {kills}",
        "seed": seed,
    }
    log: list[dict[str, Any]] = []
    result["data_dir"] = str(platform.data_dir)
    try:
        platform.start()
        capture = platform.data_dir / "chaos-capture.jsonl.gz"
        good, bad = make_capture(capture, seed, minutes, rate)
        expected = trades_of(good)
        result["input"] = {
            "frames": len(good),
            "trades": len(expected),
            "bad_frames": len(bad),
            "event_minutes": minutes,
            "replay_speed": speed,
        }
        print(
            f"capture: {len(good)} frames, {len(expected)} trades; {len(bad)} bad frames to inject",
            flush=True,
        )
        platform.add_role("feed", args=["replay", str(capture), "--speed", str(speed)])
        watch = DataFileWatch(platform.data_dir / "warehouse").start()
        try:
            chaos(platform, rng, kills, duration, watch, bad, log)
        finally:
            watch.stop()
        for name in ("normalizer", "ohlcv", "lakewriter", "query"):
            if not platform.roles[name].proc.running:
                platform.restart(name)
        result["settle"] = wait_quiet(platform, len(expected), timeout=600)
        checks = check(platform, expected, bad)
        checks["lags_at_check"] = checks["lags"]
        checks["lags"], checks["lag_drain_s"] = drain_lags(platform, timeout=300)
        result["checks"] = checks
        result["kills"] = {name: role.kills for name, role in platform.roles.items() if role.kills}
        result["kills_total"] = sum(result["kills"].values())
        result["kills_during_commit"] = sum(1 for e in log if "commit in flight" in e["event"])
        result["restarts"] = {name: role.proc.starts - 1 for name, role in platform.roles.items()}
        result["broker_restarts"] = platform.broker_restarts
        result["rows_checked"] = (
            checks["silver"]["rows"]
            + sum(g.get("actual", 0) for g in checks["gold"].values())
            + sum(checks["dlq"]["actual"].values())
        )
        result["mismatches"] = count_mismatches(checks)
        result["events"] = log
        result["processes"] = platform.sampler.table()
    finally:
        platform.stop()
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--kills", type=int, default=32, help="kill -9 count (at least 30 for the claim)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds over which kills are spread")
    parser.add_argument("--minutes", type=float, default=3.0, help="event-time span of the capture")
    parser.add_argument("--rate", type=float, default=80.0, help="trades per second of event time")
    parser.add_argument("--speed", type=float, default=3.0, help="replay pace factor")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (logs) afterwards")
    args = parser.parse_args(argv)
    result = run(args.seed, args.kills, args.duration, args.minutes, args.rate, args.speed, args.keep)
    if args.keep:
        print(f"data kept in {result.get('data_dir')}")
    print(format_table(result.get("events", [])))
    silver = result["checks"]["silver"]
    print("\n== silver\n" + format_table([{k: v for k, v in silver.items() if not k.endswith("examples")}]))
    print(
        "\n== gold vs recomputation from silver\n"
        + format_table(
            [
                {"timeframe": tf, **{k: v for k, v in g.items() if not k.endswith("examples")}}
                for tf, g in result["checks"]["gold"].items()
            ]
        )
    )
    print("\n== dlq\n" + format_table([result["checks"]["dlq"]]))
    print(
        f"\nkills: {result['kills_total']} {result['kills']} (during a lake commit: "
        f"{result['kills_during_commit']}); restarts: {result['restarts']}; broker restarts: "
        f"{result['broker_restarts']}"
    )
    print(
        f"rows checked: {result['rows_checked']}; mismatches: {result['mismatches']}; "
        f"lags at check: {result['checks']['lags_at_check']}; after draining "
        f"({result['checks']['lag_drain_s']} s): {result['checks']['lags']}; wall {result['wall_s']} s"
    )
    print(f"written to {write_results('chaos', result)}")
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
