"""Helpers shared by the platform benchmarks: processes, /proc sampling, Kafka lag, statistics.

Pure functions (percentiles, linear fit, lag arithmetic) are tested in tests/bench; the rest
starts real processes and talks to a real broker. Nothing here imports tests/ or a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench-results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The original K2's published figures, normalised per core below.
ORIGINAL_K2 = (
    {
        "design": "original K2 (Spark Structured Streaming)",
        "trades_per_s": 138.0,
        "cores": 37.5,
        "cores_text": "35-40",
    },
    {
        "design": "original K2 successor (Kotlin + ClickHouse)",
        "trades_per_s": 5000.0,
        "cores": 15.5,
        "cores_text": "15.5",
    },
)


# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float], ps: Iterable[float] = (50, 95, 99)) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {"n": len(values)}
    for p in ps:
        out[f"p{p:g}"] = percentile(values, p)
    out["max"] = max(values) if values else None
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of y = slope·x + intercept (slope 0 for < 2 distinct xs)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n == 0:
        return 0.0, 0.0
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, mean_y
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def lag_bounded(samples: Sequence[tuple[float, int]], bound: int, max_growth_per_s: float) -> bool:
    """Whether a lag series (t seconds, lag records) stayed bounded: under `bound` at the end and not
    trending up faster than `max_growth_per_s` (a linear fit over the series)."""
    if not samples:
        return False
    if samples[-1][1] > bound:
        return False
    if len(samples) < 3:
        return True
    slope, _ = linear_fit([t for t, _ in samples], [float(lag) for _, lag in samples])
    return slope <= max_growth_per_s


# ---------------------------------------------------------------------------------------------- processes


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (and its waited-for children), in seconds; None if it is gone."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after ") ": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(v) for v in fields_[11:15]) / CLK_TCK


def proc_rss(pid: int) -> tuple[int, int] | None:
    """(current RSS, peak RSS = VmHWM) in bytes, or None if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = hwm = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


@dataclass
class ProcStats:
    """CPU seconds and peak RSS of one named role, summed over every process that played it."""

    name: str
    cpu_s: float = 0.0  # closed incarnations (killed/restarted) + the live one at the last sample
    peak_rss: int = 0
    last_rss: int = 0
    _closed_cpu: float = 0.0
    _live_pid: int | None = None
    _live_cpu: float = 0.0

    def sample(self, pid: int | None) -> None:
        if pid != self._live_pid:
            self._closed_cpu += self._live_cpu
            self._live_pid, self._live_cpu = pid, 0.0
        if pid is None:
            return
        cpu = proc_cpu_seconds(pid)
        rss = proc_rss(pid)
        if cpu is not None:
            self._live_cpu = cpu
        if rss is not None:
            self.last_rss = rss[0]
            self.peak_rss = max(self.peak_rss, rss[1])
        self.cpu_s = self._closed_cpu + self._live_cpu


class ServiceProcess:
    """`python -m <module> <args>` as a real process with its own session (so kill -9 is a crash).

    The one process runner of the benchmarks and the tests (tests/processes.py re-exports it): the
    child runs from the repository root with os.environ + `env`; its output goes to
    `<log_dir or $K2_DATA_DIR/logs>/<name>.log`. A `with` block starts it and stops it (SIGTERM).
    """

    def __init__(
        self,
        module: str,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        name: str | None = None,
        python: str | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.module = module
        self.args = args or []
        self.env = {**os.environ, **(env or {})}
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = (log_dir or Path(self.env.get("K2_DATA_DIR", ".")) / "logs") / f"{self.name}.log"
        self.python = python or sys.executable
        self.argv = argv  # a full command line instead of `python -m module args`
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.argv or [self.python, "-m", self.module, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL of the whole process group: no cleanup, no flush, as a crash."""
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean stop), SIGKILL after `timeout` s; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def output(self, tail: int | None = None) -> str:
        """The process's log so far (its last `tail` characters when given)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def wait_http(self, url: str, timeout: float = 90.0) -> None:
        """Wait until url answers 200 (e.g. the /metrics endpoint); fail early if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.output(4000)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer within {timeout}s:\n{self.output(4000)}")

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (plain parser; enough for counters and gauges)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """Sum of every series of one metric name (all label sets)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


class Sampler:
    """Samples CPU and RSS of named processes every `interval` s in a thread (also lag, via a callback)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.stats: dict[str, ProcStats] = {}
        self.pids: dict[str, Any] = {}  # name → callable returning the current pid (or None)
        self.series: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.keep_series = False

    def watch(self, name: str, pid_fn: Any) -> None:
        self.pids[name] = pid_fn
        self.stats.setdefault(name, ProcStats(name))

    def sample_once(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": time.time()}
        for name, pid_fn in list(self.pids.items()):
            try:
                pid = pid_fn()
            except Exception:
                pid = None
            stats = self.stats[name]
            stats.sample(pid)
            row[name] = {"cpu_s": stats.cpu_s, "rss": stats.last_rss if pid else 0}
        if self.keep_series:
            self.series.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def start(self) -> Sampler:
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample_once()

    def table(self) -> list[dict[str, Any]]:
        return [
            {"process": s.name, "cpu_s": round(s.cpu_s, 2), "peak_rss_mb": round(s.peak_rss / 2**20, 1)}
            for s in self.stats.values()
        ]


# ---------------------------------------------------------------------------------------------- kafka


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await consumer.start()
    try:
        tps = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        if not tps:
            return {}
        offsets = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): off for tp, off in offsets.items()}
    finally:
        await consumer.stop()


def compute_lag(committed: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> int:
    """Records behind: Σ(end − committed − 1)⁺ over the partitions a group has committed for.

    The one record of slack per partition is the commit marker of a transactional producer: the end
    offset counts it, while a consumer that has read everything commits last record + 1 (aiokafka, the
    stream services' transactions), one below the end. A group that has consumed everything therefore
    shows 0.
    """
    return sum(max(ends.get(tp, off) - off - 1, 0) for tp, off in committed.items())


async def group_lags(
    bootstrap: str, groups: Iterable[str] | None = None, skip_prefixes: tuple[str, ...] = ("bench-", "_")
) -> dict[str, int]:
    """Lag of every consumer group (or the named ones), over the topics each group has committed."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        if groups is None:
            listed = await admin.list_consumer_groups()
            groups = [g[0] for g in listed if not g[0].startswith(skip_prefixes)]
        committed_by_group: dict[str, dict[tuple[str, int], int]] = {}
        topics: set[str] = set()
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {
                (tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0
            }
            committed_by_group[group] = committed
            topics.update(t for t, _ in committed)
    finally:
        await admin.close()
    ends = await end_offsets(bootstrap, topics) if topics else {}
    return {group: compute_lag(c, ends) for group, c in committed_by_group.items()}


def run(coro: Any) -> Any:
    """Run a coroutine from sync code in a fresh loop."""
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------- output


def write_results(area: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{area}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain-text table of dict rows (columns in the given or first-seen order)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


@dataclass
class Stopwatch:
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
