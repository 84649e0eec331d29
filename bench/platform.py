"""The whole platform as local processes for the benchmarks: a throwaway broker and every service.

`Platform` starts a LocalBroker on free ports with a temporary K2_DATA_DIR, creates the registry's
topics, then starts the simulator, feed, normalizer, ohlcv, lakewriter and query as real processes
(each `python -m services.<name>` with its own /metrics port), samples their CPU and RSS, and
stops everything on exit — killed processes included. bench, chaos and soak share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Sampler, ServiceProcess, group_lags, metric_sum, parse_metrics, scrape
from deploy.kafka.broker import LocalBroker
from services.common.kafka import ensure_topics
from services.common.metrics import free_port

SERVICES = ("simulator", "feed", "normalizer", "ohlcv", "lakewriter", "query")
MODULES = {
    "simulator": "services.feed.simulator",
    "feed": "services.feed",
    "normalizer": "services.normalizer",
    "ohlcv": "services.ohlcv",
    "lakewriter": "services.lakewriter",
    "query": "services.query",
}
# Consumer groups of the services (their settings' defaults).
GROUPS = {"normalizer": "k2-normalizer", "ohlcv": "k2-ohlcv", "lakewriter": "k2-lakewriter"}


class BenchBroker(LocalBroker):
    """LocalBroker, optionally formatted with Eligible Leader Replicas off (K2_BENCH_ELR=0).

    Kafka 4.1 enables ELR (KIP-966) on new clusters; aiokafka's transactional producers then get
    spurious NOT_ENOUGH_REPLICAS answers that they retry (aio-libs/aiokafka#1172), which slows
    the transactional services down. The switch lets the benchmark measure both ways.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if os.environ.get("K2_BENCH_ELR", "1") == "0":
            self.features = (*self.features, "eligible.leader.replicas.version=0")


@dataclass
class Role:
    name: str
    proc: ServiceProcess
    metrics_url: str
    kills: int = 0


@dataclass
class Platform:
    services: tuple[str, ...] = SERVICES
    sim_rate_per_exchange: float = 20.0
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    keep_data: bool = False
    sample_interval: float = 1.0
    data_dir: Path = field(init=False)
    broker: LocalBroker = field(init=False)
    roles: dict[str, Role] = field(default_factory=dict)
    sampler: Sampler = field(init=False)
    sim_port: int = 0
    query_port: int = 0
    broker_restarts: int = 0

    def __post_init__(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="k2-bench-")
        self.data_dir = Path(self._tmp) / "data"
        self.broker = BenchBroker(self.data_dir, port=free_port(), controller_port=free_port(), heap="512m")
        self.sampler = Sampler(self.sample_interval)

    # -- environment -------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def base_env(self) -> dict[str, str]:
        return {
            "K2_DATA_DIR": str(self.data_dir),
            "K2_KAFKA_BOOTSTRAP": self.bootstrap,
            "K2_KAFKA_PORT": str(self.broker.port),
            "K2_KAFKA_CONTROLLER_PORT": str(self.broker.controller_port),
            "K2_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    def _role_env(self, name: str, metrics_port: int) -> dict[str, str]:
        env = {**self.base_env(), "K2_METRICS_PORT": str(metrics_port)}
        if name == "simulator":
            env.update(
                {
                    "K2_FEED_SIMULATOR_PORT": str(self.sim_port),
                    "K2_FEED_SIMULATOR_METRICS_PORT": str(metrics_port),
                }
            )
        elif name == "feed":
            env.update(
                {"K2_FEED_SOURCE": "simulator", "K2_FEED_SIMULATOR_URL": f"ws://127.0.0.1:{self.sim_port}"}
            )
        elif name == "lakewriter":
            env["K2_LAKEWRITER_INSTANCE_ID"] = "lakewriter-0"
            env["K2_LAKEWRITER_MAINTAIN_INTERVAL_SECONDS"] = "0"
        elif name == "query":
            env.update(
                {
                    "K2_QUERY_PORT": str(self.query_port),
                    "K2_QUERY_AUTH_ENABLED": "false",
                    "K2_QUERY_RATE_LIMIT_PER_S": "1000000",
                    "K2_QUERY_RATE_LIMIT_BURST": "1000000",
                }
            )
        env.update(self.extra_env.get(name, {}))
        return env

    # -- life --------------------------------------------------------------------------------------

    def start(self, wait_timeout: float = 120.0) -> Platform:
        self.broker.start(wait=True)
        self.sampler.watch("kafka", self.broker.pid)
        asyncio.run(ensure_topics(self.bootstrap))
        self.sim_port = free_port()
        self.query_port = free_port()
        for name in self.services:
            self.add_role(name)
        for role in self.roles.values():
            role.proc.wait_http(role.metrics_url, wait_timeout)
        self.sampler.start()
        return self

    def add_role(
        self,
        name: str,
        module: str | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> Role:
        port = self.query_port if name == "query" else free_port()
        role_env = {**self._role_env(name.split("#")[0], port), **(env or {})}
        if name == "simulator":
            args = [*(args or []), "--rate", str(self.sim_rate_per_exchange)]
        proc = ServiceProcess(
            module or MODULES[name.split("#")[0]],
            args=args,
            env=role_env,
            log_dir=self.data_dir / "logs",
            name=name.replace("#", "-"),
        )
        proc.start()
        role = Role(name, proc, f"http://127.0.0.1:{port}/metrics")
        self.roles[name] = role
        self.sampler.watch(name, lambda p=proc: p.pid)
        return role

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.sampler.stop()
        for role in reversed(list(self.roles.values())):
            with contextlib.suppress(Exception):
                role.proc.stop(timeout=15)
        with contextlib.suppress(Exception):
            self.broker.stop()
        if not self.keep_data:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control and observation -------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.roles[name].proc.kill()
        self.roles[name].kills += 1

    def restart(self, name: str, wait: bool = False) -> None:
        role = self.roles[name]
        role.proc.start()
        if wait:
            role.proc.wait_http(role.metrics_url, 120)

    def restart_broker(self) -> float:
        started = time.monotonic()
        self.broker.stop()
        self.broker.start(wait=True)
        self.broker_restarts += 1
        return time.monotonic() - started

    def set_rate(self, total_per_s: float, attempts: int = 5) -> bool:
        """Synthetic market rate, split evenly over the three exchanges (False if the simulator did
        not answer: a simulator saturated by a high rate answers its control endpoint slowly)."""
        per_exchange = total_per_s / 3
        url = f"http://127.0.0.1:{self.sim_port}/control/rate?value={per_exchange}"
        for _ in range(attempts):
            try:
                with urllib.request.urlopen(url, timeout=20) as response:
                    json.loads(response.read())
                return True
            except OSError:
                time.sleep(1)
        return False

    def metrics(self, name: str) -> dict[str, float]:
        try:
            return parse_metrics(scrape(self.roles[name].metrics_url))
        except OSError:
            return {}

    def counter(self, name: str, metric: str) -> float:
        return metric_sum(self.metrics(name), metric)

    def lags(self) -> dict[str, int]:
        try:
            return asyncio.run(group_lags(self.bootstrap, list(GROUPS.values())))
        except Exception:
            return {}

    def logs_tail(self, name: str) -> str:
        return self.roles[name].proc.output(4000)

    def catalog(self) -> Any:
        from services.common.catalog import open_catalog
        from services.common.settings import K2Settings

        return open_catalog(K2Settings(data_dir=self.data_dir, kafka_bootstrap=self.bootstrap))


@contextlib.contextmanager
def running_platform(**kwargs: Any) -> Iterator[Platform]:
    platform = Platform(**kwargs)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
