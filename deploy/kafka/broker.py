"""Resolve, format, start, wait for and stop a local Apache Kafka 4.x broker.

The jars come from Maven Central through `pom.xml` (pinned version) into a git-ignored
cache; the broker's data, pid file and log live under `<K2_DATA_DIR>/kafka` and
`<K2_DATA_DIR>/logs`. Every step is idempotent: a second `start` reuses the cache and
the formatted storage, and `start` on a running broker only waits for it.
Used by `task up`, the test fixtures and the benchmarks alike.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("K2_KAFKA_CACHE", HERE / ".cache"))
LIBS_DIR = CACHE_DIR / "libs"
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _terminate_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the kernel sends the child SIGTERM when `parent` exits (Linux's
    PR_SET_PDEATHSIG); elsewhere a no-op."""

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class BrokerError(RuntimeError):
    """The broker could not be resolved, formatted, started or stopped."""


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the broker jars into the cache (once); return the folder holding them."""
    marker = LIBS_DIR / ".complete"
    if marker.exists() and marker.read_text() == POM.read_text():
        return LIBS_DIR
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerError(f"`{tool}` is not on PATH: K2's local broker needs Java 17+ and Maven")
    if LIBS_DIR.exists():
        shutil.rmtree(LIBS_DIR)
    cmd = [
        "mvn",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={LIBS_DIR}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        raise BrokerError(f"maven could not resolve the Kafka jars:\n{result.stdout}\n{result.stderr}")
    marker.write_text(POM.read_text())
    return LIBS_DIR


@dataclass
class LocalBroker:
    data_dir: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "512m"
    # KRaft feature levels set at format time, e.g. ("eligible.leader.replicas.version=0",).
    features: tuple[str, ...] = ()
    # Stop (SIGTERM) when the process that started it exits, even by kill -9 (Linux): for a test
    # session's or a benchmark's broker, which nothing else would stop. `task up`'s broker outlives it.
    exit_with_parent: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "kafka.log"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.log_dir}",
                    # One node: every internal topic has one replica.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=10",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "min.insync.replicas=1",
                    # KIP-890 verification answers a transactional produce that races the previous
                    # transaction's completion with NOT_ENOUGH_REPLICAS for pre-KIP-890 clients such as
                    # aiokafka (aio-libs/aiokafka#1172): retried, but each retry stalls a batch ≥ 100 ms.
                    "transaction.partition.verification.enable=false",
                    "num.partitions=1",
                    # Topics come from the registry (task topics) or from the services, never by accident.
                    "auto.create.topics.enable=false",
                    "group.initial.rebalance.delay.ms=0",
                    "log.cleaner.backoff.ms=5000",
                    "message.max.bytes=4194304",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "",
                ]
            )
        )

    def is_formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def format(self, libs: Path) -> None:
        if self.is_formatted():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",  # one "=" form: an id may begin with "-"
                "-c",
                str(self.config_file),
                "--ignore-formatted",
                *(arg for feature in self.features for arg in ("--feature", feature)),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}\n{result.stderr}")

    def pid(self) -> int | None:
        """The running broker's pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = None
        # Right after exec the cmdline can read empty for a moment; that is still our broker.
        ours = cmdline == b"" or (
            cmdline is not None and b"kafka.Kafka" in cmdline and str(self.config_file).encode() in cmdline
        )
        if not ours or not _alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, wait: bool = True, timeout: float = 90.0) -> None:
        """Start the broker unless it runs already; with wait, return once it answers metadata."""
        if self.pid() is None:
            for port in (self.port, self.controller_port):
                if _port_in_use(port):
                    raise BrokerError(
                        f"port {port} is in use by another process: set K2_KAFKA_PORT / "
                        "K2_KAFKA_CONTROLLER_PORT to free ports"
                    )
            libs = fetch_jars()
            self.write_config()
            self.format(libs)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            env.pop("KAFKA_OPTS", None)
            with open(self.log_file, "ab") as log:
                proc = subprocess.Popen(
                    [
                        "java",
                        f"-Xmx{self.heap}",
                        f"-Xms{min_heap(self.heap)}",
                        "-XX:+UseG1GC",
                        "-XX:MaxGCPauseMillis=20",
                        "-Djava.awt.headless=true",
                        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                        "-cp",
                        f"{libs}/*",
                        "kafka.Kafka",
                        str(self.config_file),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=env,
                    preexec_fn=_terminate_with(os.getpid()) if self.exit_with_parent else None,
                )
            self.pid_file.write_text(str(proc.pid))
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        from services.common.kafka import wait_for_broker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise BrokerError(f"the broker exited during start; see {self.log_file}:\n{self.tail_log()}")
            try:
                _run_coroutine(wait_for_broker(self.bootstrap, timeout=min(5.0, deadline - time.monotonic())))
                return
            except TimeoutError:
                continue
        raise BrokerError(f"the broker did not answer within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after timeout); False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """kill -9, for fault-injection tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_bytes(self) -> int | None:
        pid = self.pid()
        if pid is None:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, so an idle broker stays small."""
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    value = int(heap[:-1]) * units[heap[-1].lower()] if heap[-1].lower() in units else int(heap) // 1024
    return f"{max(value // 4, 64 * 1024) // 1024}m"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child (when we started it in this process) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def from_settings() -> LocalBroker:
    from services.common.settings import K2Settings

    settings = K2Settings()
    return LocalBroker(
        settings.resolved_data_dir, settings.kafka_port, settings.kafka_controller_port, settings.kafka_heap
    )
