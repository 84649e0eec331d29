"""The supervisor runs the whole platform on the bundled capture: data lands, Prometheus scrapes, alerts fire.

One platform for the module (starting it is the expensive part): broker, simulator serving
services/feed/captures/demo.jsonl.gz, feed, two normalizers, ohlcv, lakewriter, query and a real
Prometheus with 1 s scrape/evaluation and every alert's `for:` shortened to 0s.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from deploy.local.plan import DEMO_CAPTURE
from services.common.catalog import open_catalog
from services.common.instruments import EXCHANGES
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_TRADES, bronze_table, gold_table
from tests.deploy.metric_names import dashboard_expressions, exposed, referenced, rule_expressions
from tests.deploy.platform import LocalPlatform
from tests.kafka_helpers import wait_for
from tests.processes import scrape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
GRACE_SECONDS = 2
# The simulator shifts event times by a constant: faster than 1.25× the 180 s capture would put trades
# more than 60 s ahead of their arrival, and the normalizer rejects those (ts_future).
DEMO_SPEED = 1.25
# The first 75 s of the bundled capture (two fifths of it) keeps the run short on a busy 2-core machine.
CAPTURE_SECONDS = 75


def first_seconds(source: Path, target: Path, seconds: float) -> Path:
    """The records of a capture file received within its first `seconds`."""
    first: int | None = None
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(target, "wt", encoding="utf-8") as dst:
        for line in src:
            received_at = json.loads(line)["received_at"]
            first = received_at if first is None else first
            if received_at - first <= seconds * 1e9:
                dst.write(line)
    return target


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    if shutil.which("prometheus") is None:
        pytest.fail(
            "Prometheus is not installed: run deploy/local/install-prometheus.sh "
            "(apt-get update && apt-get install -y prometheus)"
        )
    assert DEMO_CAPTURE.is_file(), f"the bundled capture {DEMO_CAPTURE} is missing"
    root = tmp_path_factory.mktemp("platform")
    capture = first_seconds(DEMO_CAPTURE, root / "demo-head.jsonl.gz", CAPTURE_SECONDS)
    platform = LocalPlatform(
        root / "k2",
        K2_DEPLOY_DEMO_CAPTURE=str(capture),
        K2_REPLICAS_NORMALIZER="2",
        K2_DEPLOY_DEMO_SPEED=str(DEMO_SPEED),
        K2_DEPLOY_UP_TIMEOUT="150",
        K2_PROMETHEUS_SCRAPE_INTERVAL="1s",
        K2_PROMETHEUS_EVAL_INTERVAL="1s",
        K2_PROMETHEUS_RULE_FOR="0s",
        K2_OHLCV_GRACE_SECONDS=str(GRACE_SECONDS),
        K2_LAKEWRITER_BATCH_SECONDS="1",
    )
    try:
        started = platform.run("up", "--demo", timeout=240)
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}\n{platform.logs()}"
        yield platform
    finally:
        stopped = platform.run("down", timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_status_lists_every_process_healthy(platform: LocalPlatform) -> None:
    result = platform.run("status", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    names = [f"{item['service']}-{item['replica']}" for item in platform.plan()]
    assert {
        "feed-0",
        "normalizer-0",
        "normalizer-1",
        "ohlcv-0",
        "lakewriter-0",
        "query-0",
        "simulator-0",
    } <= set(names)
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for name in [*names, "kafka", "prometheus"]:
        assert lines[name][1] == "RUNNING" and "ok" in lines[name], result.stdout
    assert "CONSUMER GROUP" in result.stdout


def test_every_metric_of_rules_and_dashboard_is_emitted(platform: LocalPlatform) -> None:
    emitted: set[str] = set()
    for item in platform.plan():
        emitted |= exposed(scrape(f"http://127.0.0.1:{item['port']}/metrics"))
    used = referenced([*rule_expressions(), *dashboard_expressions()])
    missing = {name: sorted(where) for name, where in used.items() if name not in emitted}
    assert not missing, f"metrics named by rules/panels that no service emits: {missing}"


async def test_prometheus_scrapes_every_process(platform: LocalPlatform) -> None:
    expected = {f"127.0.0.1:{item['port']}" for item in platform.plan()}

    def all_up() -> bool:
        targets = platform.prometheus("/api/v1/targets")["activeTargets"]
        healthy = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        return expected <= healthy

    await wait_for(all_up, timeout=30, message="every process is an `up` Prometheus target")
    rules = platform.prometheus("/api/v1/rules")["groups"]
    assert sum(len(group["rules"]) for group in rules) >= 10


def firing(platform: LocalPlatform, alert: str, instance: str) -> bool:
    alerts = platform.prometheus("/api/v1/alerts")["alerts"]
    return any(
        a["labels"].get("alertname") == alert
        and a["labels"].get("instance") == instance
        and a["state"] == "firing"
        for a in alerts
    )


async def test_killed_replica_is_restarted_and_alerted(platform: LocalPlatform) -> None:
    victim = next(
        item for item in platform.plan() if item["service"] == "normalizer" and item["replica"] == 1
    )
    instance = f"127.0.0.1:{victim['port']}"
    before = platform.process("normalizer-1")
    assert before["statename"] == "RUNNING"
    assert not firing(platform, "K2ServiceDown", instance)
    fired: list[float] = []

    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    def alert_fired() -> bool:
        if firing(platform, "K2ServiceDown", instance):
            fired.append(time.monotonic())
        return bool(fired)

    await wait_for(
        alert_fired, timeout=60, interval=0.2, message="K2ServiceDown fires for the killed replica"
    )
    assert fired[0] >= killed_at

    def restarted() -> bool:
        info = platform.process("normalizer-1")
        return info["statename"] == "RUNNING" and info["pid"] not in (0, before["pid"])

    await wait_for(restarted, timeout=60, message="supervisord restarts the killed replica")
    await wait_for(
        lambda: not firing(platform, "K2ServiceDown", instance),
        timeout=90,
        message="the alert resolves once the replica answers again",
    )


def expected_trades(platform: LocalPlatform) -> set[tuple[str, str, str]]:
    """Natural keys of every trade in the capture the platform's simulator serves."""
    return trade_keys(Path(platform.env["K2_DEPLOY_DEMO_CAPTURE"]))


def trade_keys(capture: Path) -> set[tuple[str, str, str]]:
    """Natural keys of every trade in a capture file, as the normalizer's parsers read them."""
    from services.feed.capture import read_capture

    records = read_capture(capture)
    return parse_keys((r.exchange, r.value, r.received_at_ns) for r in records if r.kind == "frame")


def parse_keys(frames: Iterable[tuple[str, bytes, int]]) -> set[tuple[str, str, str]]:
    """(exchange, frame, received_at ns) → natural keys of the trades the normalizer's parsers find."""
    from services.common.instruments import default_instruments
    from services.normalizer.parsers import parse_frame
    from services.normalizer.parsers.common import Lineage

    instruments = default_instruments()
    keys: set[tuple[str, str, str]] = set()
    for exchange, frame, received_at_ns in frames:
        result = parse_frame(exchange, frame, received_at_ns // 1000, Lineage("capture", 0, 0), instruments)
        keys.update((t.exchange, t.symbol, t.trade_id) for t in result.trades)
    return keys


def received_trades(catalog: Catalog) -> set[tuple[str, str, str]]:
    """Trades in the frames the feed received (bronze)."""
    frames: list[tuple[str, bytes, int]] = []
    for exchange in EXCHANGES:
        try:
            table = catalog.load_table(f"{NAMESPACE}.{bronze_table(exchange)}")
        except Exception:
            continue
        rows = table.scan(selected_fields=("kind", "frame", "received_at_ns")).to_arrow().to_pylist()
        frames += [(exchange, r["frame"].encode(), r["received_at_ns"]) for r in rows if r["kind"] == "frame"]
    return parse_keys(frames)


async def test_silver_and_gold_hold_the_capture(platform: LocalPlatform) -> None:
    capture = expected_trades(platform)
    assert capture, "the capture holds trades"
    catalog = open_catalog(K2Settings(data_dir=platform.data_dir))
    # The simulator plays the capture from its own start; the feed connects within about a second of
    # it (up starts the simulator last), so bronze holds nearly all of the capture's frames.
    received: set[tuple[str, str, str]] = set()

    def replayed() -> bool:
        nonlocal received
        received = received_trades(catalog)
        return len(received) >= 0.9 * len(capture)

    await wait_for(
        replayed,
        timeout=420,
        interval=3,
        message=f"bronze holds ≥ 90 % of the capture's {len(capture)} trades",
    )

    def silver_rows() -> list[dict]:
        try:
            table = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}")
        except Exception:
            return []
        return (
            table.scan(selected_fields=("exchange", "symbol", "trade_id", "exchange_ts", "quantity"))
            .to_arrow()
            .to_pylist()
        )

    rows: list[dict] = []

    def complete() -> bool:
        # by content, not by count: silver may also hold trades bronze does not yet (see below)
        nonlocal received, rows
        received = received_trades(catalog)
        rows = silver_rows()
        return received <= {(r["exchange"], r["symbol"], r["trade_id"]) for r in rows}

    await wait_for(complete, timeout=300, interval=3, message="silver_trades holds every trade bronze held")
    keys = [(r["exchange"], r["symbol"], r["trade_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "silver holds each trade once"
    # The replay goes on meanwhile: silver may already hold trades whose frames' bronze commit is still
    # to come (the two tables commit independently). Each must show up in bronze, and be in the capture.
    in_bronze: set[tuple[str, str, str]] = set()

    def bronze_caught_up() -> bool:
        nonlocal in_bronze
        in_bronze = received_trades(catalog)
        return set(keys) <= in_bronze

    await wait_for(bronze_caught_up, timeout=120, interval=2, message="bronze to hold what silver holds")
    assert in_bronze <= capture

    # The capture is re-timed to now and replayed fast, so its event times run ahead of the wall clock:
    # a window closes once its symbol's partition watermark (newest exchange_ts − grace) passes its end.
    # Those windows must be in gold, each equal to the silver trades it covers.
    grace = timedelta(seconds=GRACE_SECONDS)
    minute: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    newest: dict[tuple, datetime] = {}
    for row in rows:
        ts, symbol = row["exchange_ts"], (row["exchange"], row["symbol"])
        entry = minute[(*symbol, ts.replace(second=0, microsecond=0))]
        entry[0] += 1
        entry[1] += row["quantity"]
        newest[symbol] = max(newest.get(symbol, ts), ts)
    closed = {key for key in minute if key[2] + timedelta(minutes=1) <= newest[key[:2]] - grace}
    assert closed, "the replay closes some 1m windows"

    def gold_1m() -> dict:
        try:
            table = catalog.load_table(f"{NAMESPACE}.{gold_table('1m')}")
        except Exception:
            return {}
        latest: dict = {}
        for c in table.scan().to_arrow().to_pylist():
            key = (c["exchange"], c["symbol"], c["window_start"])
            if key not in latest or c["revision"] > latest[key]["revision"]:
                latest[key] = c
        return latest

    def gold_matches_silver() -> bool:
        # A window closed early (a partition idle while the pipeline lags) is revised by its late trades:
        # gold converges to one row per candle, its latest revision, equal to the silver trades it covers.
        candles = gold_1m()
        return all(key in candles and candles[key]["trade_count"] == minute[key][0] for key in closed)

    await wait_for(
        gold_matches_silver,
        timeout=180,
        interval=2,
        message=f"gold_ohlcv_1m holds the {len(closed)} closed 1m windows, as silver counts them",
    )
    candles = gold_1m()
    assert set(candles) <= set(minute), "no candle without silver trades"
    for key in closed:
        count, volume = minute[key]
        assert candles[key]["trade_count"] == count, key
        assert candles[key]["volume"] == volume, key


def test_logs_command_shows_a_service(platform: LocalPlatform) -> None:
    result = platform.run("logs", "normalizer", "--no-follow", "-n", "5", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "normalizer-0.log" in result.stdout and "normalizer-1.log" in result.stdout


def test_two_runs_do_not_share_state(platform: LocalPlatform, tmp_path: Path) -> None:
    other = LocalPlatform(tmp_path / "other")
    result = other.run("status", timeout=60)
    assert result.returncode != 0  # nothing runs for that data dir
    assert "STOPPED" in result.stdout
    assert not (tmp_path / "other" / "run").exists() or not any((tmp_path / "other" / "run").iterdir())


def test_a_day_is_exported_from_bronze_and_copied_to_another_lake(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.deploy.metric_names import REPO

    catalog = open_catalog(K2Settings(data_dir=platform.data_dir))
    silver = catalog.load_table(f"{NAMESPACE}.{SILVER_TRADES}").scan().to_arrow()
    day = min(silver.column("exchange_ts").to_pylist()).date()
    env = {**platform.env}
    capture = tmp_path / "day.jsonl.gz"
    exported = subprocess.run(
        [sys.executable, "-m", "deploy.ops", "export-bronze", "--day", str(day), "--out", str(capture)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    # The day's export carries every trade the feed received, and nothing that was not in the capture.
    assert trade_keys(capture) == received_trades(catalog)
    assert trade_keys(capture) <= expected_trades(platform)
    target = {**platform.env, "K2_DATA_DIR": str(tmp_path / "target")}
    made = subprocess.run(
        [sys.executable, "-m", "services.lakewriter", "ensure-tables"],
        env=target,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    copied = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy.ops",
            "copy-day",
            "--day",
            str(day),
            "--from-data-dir",
            str(platform.data_dir),
        ],
        env=target,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert copied.returncode == 0, copied.stderr
    rebuilt = open_catalog(K2Settings(data_dir=tmp_path / "target")).load_table(
        f"{NAMESPACE}.{SILVER_TRADES}"
    )
    same_day = [ts for ts in silver.column("exchange_ts").to_pylist() if ts.date() == day]
    assert rebuilt.scan().to_arrow().num_rows == len(same_day)
