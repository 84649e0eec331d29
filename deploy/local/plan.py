"""What the local supervisor runs: one entry per process (service replica), with its port and environment.

Pure data, no side effects: `up` turns the plan into a supervisord configuration and Prometheus
targets, `status` uses it to know which ports to probe.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.settings import SERVICES, DeploySettings

REPO = Path(__file__).resolve().parents[2]
DEMO_CAPTURE = REPO / "services" / "feed" / "captures" / "demo.jsonl.gz"
PORT_SLOTS = {"feed": 0, "normalizer": 1, "ohlcv": 2, "lakewriter": 3, "simulator": 4}


@dataclass(frozen=True)
class Proc:
    """One process: `python -m <module>` as replica `replica` of `service`."""

    service: str
    replica: int
    module: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    autostart: bool = True  # False: started by `up` once every other process is healthy

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


# Per-replica identity: a restarted replica comes back under the same name (static membership, its state).
REPLICA_ENV = {
    "lakewriter": lambda r: {"K2_LAKEWRITER_INSTANCE_ID": f"lakewriter-{r}"},
}


def simulator_port(settings: DeploySettings) -> int:
    return settings.deploy_simulator_port or settings.deploy_port_base + 99


def metrics_port(settings: DeploySettings, service: str, replica: int) -> int:
    if service == "query":
        return settings.deploy_query_port + replica
    return settings.deploy_port_base + 20 * PORT_SLOTS[service] + replica


def build_plan(settings: DeploySettings, demo: bool = False) -> list[Proc]:
    """Every process of the platform in start order: simulator (demo), consumers, query, then the feed."""
    procs: list[Proc] = []
    feed_source = "simulator" if demo else settings.feed_source
    sim_env: dict[str, str] = {}
    if feed_source == "simulator":
        sim_port = simulator_port(settings)
        sim_env = simulator_client_env(sim_port)
        port = metrics_port(settings, "simulator", 0)
        procs.append(
            Proc(
                "simulator",
                0,
                "services.feed.simulator",
                port,
                env={
                    "K2_METRICS_PORT": str(port),
                    "K2_FEED_SIMULATOR_METRICS_PORT": str(port),
                    **simulator_server_env(sim_port, demo, settings.deploy_demo_capture),
                },
                args=("--speed", str(settings.deploy_demo_speed)) if demo else (),
                # A capture plays from the simulator's start, whether a feed listens or not:
                # in demo mode it starts last, when the feed is running and retrying.
                autostart=not demo,
            )
        )
    for service in SERVICES:
        for replica in range(settings.replicas(service)):
            port = metrics_port(settings, service, replica)
            env = {"K2_METRICS_PORT": str(port), "K2_REPLICA": str(replica)}
            env.update(REPLICA_ENV.get(service, lambda r: {})(replica))
            if service == "query":
                env.update(query_env(port))
            if service == "feed":
                env.update({"K2_FEED_SOURCE": feed_source, **sim_env})
            procs.append(Proc(service, replica, f"services.{service}", port, env=env))
    return procs


def simulator_server_env(port: int, demo: bool, capture: str = "") -> dict[str, str]:
    """Environment of the simulator process: where it listens and, in demo mode, which capture it serves."""
    env = {"K2_FEED_SIMULATOR_PORT": str(port), "K2_FEED_SIMULATOR_HOST": "127.0.0.1"}
    if demo:
        env["K2_FEED_SIMULATOR_CAPTURE"] = capture or str(DEMO_CAPTURE)
    return env


def simulator_client_env(port: int) -> dict[str, str]:
    """Environment telling the feed where the simulator listens (and to retry it every second at most)."""
    return {"K2_FEED_SIMULATOR_URL": f"ws://127.0.0.1:{port}", "K2_FEED_BACKOFF_MAX_S": "1"}


def query_env(port: int) -> dict[str, str]:
    """The query API serves HTTP and /metrics on one port."""
    return {"K2_QUERY_PORT": str(port), "K2_QUERY_HOST": "127.0.0.1"}
